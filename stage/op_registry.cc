#include "stage/op_registry.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <mutex>

#include <boost/make_shared.hpp>

namespace sluice {
namespace {

std::map<std::string, OpDefinition, std::less<>>& Registry() {
  static auto* registry = new std::map<std::string, OpDefinition, std::less<>>;
  return *registry;
}

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

// A broken registration is a bug in the program that carries it: say so and
// stop before anything runs.
[[noreturn]] void BadRegistration(const std::string& name, const char* why) {
  std::fprintf(stderr, "sluice: cannot register op '%s': %s\n", name.c_str(),
               why);
  std::abort();
}

namespace po = boost::program_options;

// What the parser keeps of an op's own flag: the tokens of each occurrence,
// in the order given, unparsed until OpFlagsPerOp knows which op each is for.
struct Occurrences {
  std::vector<std::vector<std::string>> values;
};

// An op's flag as the stage's parser sees it: the op's own semantic for the
// help text and the number of tokens, but any number of occurrences, kept
// raw. It is not composing, so that a flag set on the command line is not
// also read from the environment or the --config file (Boost skips sources
// after the first that sets a non-composing option, yet hands every
// occurrence within that source to parse()).
class RepeatableValue : public po::value_semantic {
 public:
  explicit RepeatableValue(boost::shared_ptr<const po::value_semantic> own)
      : own_(std::move(own)) {}
  std::string name() const override { return own_->name(); }
  unsigned min_tokens() const override { return own_->min_tokens(); }
  unsigned max_tokens() const override { return own_->max_tokens(); }
  bool is_composing() const override { return false; }
  bool is_required() const override { return false; }
  void parse(boost::any& value_store, const std::vector<std::string>& tokens,
             bool /*utf8*/) const override {
    if (value_store.empty()) value_store = Occurrences{};
    boost::any_cast<Occurrences&>(value_store).values.push_back(tokens);
  }
  // No default here: OpFlagsPerOp applies the op's own.
  bool apply_default(boost::any& /*value_store*/) const override { return false; }
  void notify(const boost::any& /*value_store*/) const override {}

 private:
  boost::shared_ptr<const po::value_semantic> own_;
};

template <typename... T>
bool IsVectorOf(const po::value_semantic& semantic) {
  return ((dynamic_cast<const po::typed_value<std::vector<T>>*>(&semantic) != nullptr) ||
          ...);
}

// A flag whose value is a list, built by repeating it (--header): each
// occurrence adds a value for every op, rather than naming one op's value.
bool IsListValued(const po::value_semantic& semantic) {
  return semantic.is_composing() || semantic.max_tokens() > 1 ||
         IsVectorOf<std::string, int, unsigned, long, long long, unsigned long,
                    double>(semantic);
}

// "--url is given 3 times, but 2 ops of --op take it (1: http, 3: http)...".
Status WrongCount(const std::string& flag, size_t given,
                  std::span<const OpDefinition* const> chain,
                  const std::vector<size_t>& takers) {
  std::string ops;
  for (size_t position : takers) {
    if (!ops.empty()) ops += ", ";
    ops += std::to_string(position + 1) + ": " + chain[position]->name;
  }
  return InvalidArgument("--" + flag + " is given " + std::to_string(given) +
                         " times, but " + std::to_string(takers.size()) +
                         (takers.size() == 1 ? " op of --op takes it (" : " ops of --op take it (") +
                         ops + "); give it once for all of them, or once per op, in chain order");
}

}  // namespace

RegisterOp::RegisterOp(OpDefinition definition) {
  const std::string name = definition.name;
  if (!ValidName(name)) {
    BadRegistration(name, "a name is 1-64 of [a-z0-9_-]");
  }
  if (!definition.make_item && !definition.make_batch && !definition.make_async) {
    BadRegistration(name, "it has no make_item, make_batch or make_async");
  }
  if (definition.default_threads < 1 || definition.max_run < 1 ||
      definition.default_concurrency < 1) {
    BadRegistration(name, "default_threads, default_concurrency and max_run must be >= 1");
  }
  if (!Registry().emplace(name, std::move(definition)).second) {
    BadRegistration(name, "the name is taken");
  }
}

void RegisterBuiltinOps() {
  static const bool once = [] {
    RegisterSimulatedOps();
    RegisterExecOp();
    RegisterHttpOp();
    return true;
  }();
  (void)once;
}

const OpDefinition* FindOp(std::string_view name) {
  auto it = Registry().find(name);
  return it == Registry().end() ? nullptr : &it->second;
}

std::vector<const OpDefinition*> RegisteredOps() {
  std::vector<const OpDefinition*> ops;
  for (const auto& [name, definition] : Registry()) ops.push_back(&definition);
  return ops;
}

std::string OpInChain(std::span<const OpDefinition* const> chain, size_t i) {
  const bool repeated = std::count(chain.begin(), chain.end(), chain[i]) > 1;
  return "--op " + chain[i]->name +
         (repeated ? " (op " + std::to_string(i + 1) + " of the chain)" : "");
}

void AddRepeatableOpFlags(const OpDefinition& op, po::options_description& options) {
  if (!op.flags) return;
  po::options_description own;
  op.flags(own);
  for (const auto& flag : own.options()) {
    options.add(boost::make_shared<po::option_description>(
        flag->long_name().c_str(), new RepeatableValue(flag->semantic()),
        flag->description().c_str()));
  }
}

StatusOr<std::vector<std::unique_ptr<po::variables_map>>> OpFlagsPerOp(
    const po::variables_map& parsed, std::span<const OpDefinition* const> chain) {
  // The positions in the chain of each op's instances: the ops that take
  // its flags (no two ops declare the same flag).
  std::map<const OpDefinition*, std::vector<size_t>> takers;
  for (size_t i = 0; i < chain.size(); ++i) takers[chain[i]].push_back(i);

  std::vector<std::unique_ptr<po::variables_map>> per_op;
  for (size_t i = 0; i < chain.size(); ++i) {
    const OpDefinition& op = *chain[i];
    auto flags = std::make_unique<po::variables_map>();
    // The stage's own flags, as parsed; no op's raw occurrences.
    std::map<std::string, po::variable_value>& values = *flags;
    for (const auto& [name, value] : parsed) {
      if (boost::any_cast<Occurrences>(&value.value()) == nullptr) values.emplace(name, value);
    }
    if (op.flags) {
      po::options_description own;
      op.flags(own);
      const std::vector<size_t>& same_op = takers[&op];
      const size_t k = static_cast<size_t>(
          std::find(same_op.begin(), same_op.end(), i) - same_op.begin());
      // The prefix makes Boost's messages name "--rate", as on the command line.
      po::parsed_options given(&own, po::command_line_style::allow_long);
      for (const auto& flag : own.options()) {
        const std::string& name = flag->long_name();
        auto it = parsed.find(name);
        if (it == parsed.end()) continue;
        const auto* raw = boost::any_cast<Occurrences>(&it->second.value());
        if (raw == nullptr || raw->values.empty()) continue;
        std::vector<const std::vector<std::string>*> chosen;
        if (IsListValued(*flag->semantic())) {
          for (const auto& tokens : raw->values) chosen.push_back(&tokens);
        } else if (raw->values.size() == 1) {
          chosen.push_back(&raw->values[0]);
        } else if (raw->values.size() == same_op.size()) {
          chosen.push_back(&raw->values[k]);
        } else {
          return WrongCount(name, raw->values.size(), chain, same_op);
        }
        for (const auto* tokens : chosen) {
          po::option option(name, *tokens);
          option.original_tokens.push_back("--" + name);
          option.original_tokens.insert(option.original_tokens.end(), tokens->begin(),
                                        tokens->end());
          given.options.push_back(std::move(option));
        }
      }
      try {
        po::variables_map own_values;
        po::store(given, own_values);
        po::notify(own_values);
        for (const auto& [name, value] : own_values) values[name] = value;
      } catch (const po::error& e) {
        return InvalidArgument(OpInChain(chain, i) + ": " + e.what());
      }
    }
    per_op.push_back(std::move(flags));
  }
  return per_op;
}

OpDefinition WithFlags(const OpDefinition& op, const po::variables_map* flags) {
  // The contexts handed to the instances, kept for the life of the
  // definition: an instance may hold on to its OpContext (sluice/op.h), and
  // the runtime's own copy has the stage's flags. Instances may be made on
  // several threads (the inline one on first use).
  struct Contexts {
    std::mutex mu;
    std::deque<OpContext> made;  // Guarded by mu.
  };
  auto contexts = std::make_shared<Contexts>();
  auto bind = [contexts, flags](const OpContext& context) -> const OpContext& {
    std::lock_guard<std::mutex> lock(contexts->mu);
    OpContext& bound = contexts->made.emplace_back(context);
    bound.flags = flags;
    return bound;
  };
  OpDefinition bound = op;
  if (op.make_item) {
    bound.make_item = [make = op.make_item, bind](const OpContext& c) { return make(bind(c)); };
  }
  if (op.make_batch) {
    bound.make_batch = [make = op.make_batch, bind](const OpContext& c) { return make(bind(c)); };
  }
  if (op.make_async) {
    bound.make_async = [make = op.make_async, bind](const OpContext& c) { return make(bind(c)); };
  }
  return bound;
}

std::string RegisteredOpNames() {
  std::string names;
  for (const auto& [name, definition] : Registry()) {
    if (!names.empty()) names += ", ";
    names += name;
  }
  return names;
}

}  // namespace sluice
