#include "stage/op_registry.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>

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

std::string RegisteredOpNames() {
  std::string names;
  for (const auto& [name, definition] : Registry()) {
    if (!names.empty()) names += ", ";
    names += name;
  }
  return names;
}

}  // namespace sluice
