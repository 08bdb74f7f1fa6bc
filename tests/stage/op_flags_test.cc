// Issue 21, point 4: an op's own flags are per op of the chain
// (stage/op_registry.h, "Op flags"). Ops defined here, unregistered, with
// flags of the kinds the built-in ones have.
#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>

#include "common/config.h"
#include "stage/op_registry.h"
#include "tests/harness/process.h"

namespace sluice {
namespace {

class Nothing : public ItemOp {
 public:
  Status Process(Item&) override { return Status::Ok(); }
};

// Like http: a string, a typed value with a default, a list flag.
OpDefinition CallOp() {
  return {.name = "call",
          .summary = "test op",
          .make_item = Make<Nothing>,
          .flags = [](po::options_description& flags) {
            flags.add_options()
                ("call-url", po::value<std::string>(), "url")
                ("call-rate", po::value<int64_t>()->default_value(7), "rate")
                ("call-header", po::value<std::vector<std::string>>(), "headers");
          }};
}

// Like exec: one string flag.
OpDefinition RunOp() {
  return {.name = "run",
          .summary = "test op",
          .make_item = Make<Nothing>,
          .flags = [](po::options_description& flags) {
            flags.add_options()("run-cmd", po::value<std::string>(), "command");
          }};
}

class OpFlags : public ::testing::Test {
 protected:
  OpFlags() : call_(CallOp()), run_(RunOp()) {
    options_.add_options()("threads", po::value<std::string>(), "stage flag");
    AddRepeatableOpFlags(call_, options_);
    AddRepeatableOpFlags(run_, options_);
  }

  // Parses `args` (after the program name) with ParseCommandLine, then
  // resolves the flags of `chain`.
  StatusOr<std::vector<std::unique_ptr<po::variables_map>>> Resolve(
      std::vector<std::string> args, std::vector<const OpDefinition*> chain) {
    args.insert(args.begin(), "sluice-test");
    std::vector<const char*> argv;
    for (const std::string& arg : args) argv.push_back(arg.c_str());
    vm_ = po::variables_map();
    std::optional<int> exit = ParseCommandLine({"sluice-test", ""}, options_,
                                               static_cast<int>(argv.size()), argv.data(), vm_);
    EXPECT_EQ(exit, std::nullopt);
    return OpFlagsPerOp(vm_, chain);
  }

  OpDefinition call_, run_;
  po::options_description options_;
  po::variables_map vm_;
};

TEST_F(OpFlags, FlagGivenOnceAppliesToEveryOpThatTakesIt) {
  auto flags = Resolve({"--call-url", "u", "--threads", "2,1,1"}, {&call_, &run_, &call_});
  ASSERT_TRUE(flags.ok()) << flags.status().message();
  ASSERT_EQ(flags->size(), 3u);
  EXPECT_EQ((*flags)[0]->at("call-url").as<std::string>(), "u");
  EXPECT_EQ((*flags)[2]->at("call-url").as<std::string>(), "u");
  EXPECT_EQ((*flags)[1]->count("call-url"), 0u) << "run does not take --call-url";
  for (const auto& op : *flags) {
    EXPECT_EQ(op->at("threads").as<std::string>(), "2,1,1") << "stage flags pass through";
  }
}

TEST_F(OpFlags, KthOccurrenceGoesToTheKthOpThatTakesIt) {
  auto flags = Resolve({"--call-url", "first", "--run-cmd", "cat", "--call-url", "second",
                        "--call-rate", "1", "--call-rate", "2"},
                       {&call_, &run_, &call_});
  ASSERT_TRUE(flags.ok()) << flags.status().message();
  EXPECT_EQ((*flags)[0]->at("call-url").as<std::string>(), "first");
  EXPECT_EQ((*flags)[2]->at("call-url").as<std::string>(), "second");
  EXPECT_EQ((*flags)[0]->at("call-rate").as<int64_t>(), 1);
  EXPECT_EQ((*flags)[2]->at("call-rate").as<int64_t>(), 2);
  EXPECT_EQ((*flags)[1]->at("run-cmd").as<std::string>(), "cat");
}

TEST_F(OpFlags, FlagNotGivenHasTheOpsDefault) {
  auto flags = Resolve({"--call-url", "u"}, {&call_, &call_});
  ASSERT_TRUE(flags.ok()) << flags.status().message();
  for (const auto& op : *flags) {
    EXPECT_EQ(op->at("call-rate").as<int64_t>(), 7);
    EXPECT_TRUE(op->at("call-rate").defaulted());
  }
}

TEST_F(OpFlags, WrongCountIsAnErrorNamingTheFlagTheCountAndTheOps) {
  auto flags = Resolve({"--call-url", "a", "--call-url", "b", "--call-url", "c"},
                       {&call_, &run_, &call_});
  ASSERT_FALSE(flags.ok());
  EXPECT_EQ(flags.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(flags.status().message(),
            "--call-url is given 3 times, but 2 ops of --op take it (1: call, 3: call); "
            "give it once for all of them, or once per op, in chain order");
}

TEST_F(OpFlags, ListFlagGoesWholeToEveryOpThatTakesIt) {
  auto flags = Resolve({"--call-header", "A: 1", "--call-header", "B: 2", "--call-header",
                        "C: 3"},
                       {&call_, &call_});
  ASSERT_TRUE(flags.ok()) << flags.status().message();
  for (const auto& op : *flags) {
    EXPECT_EQ(op->at("call-header").as<std::vector<std::string>>(),
              (std::vector<std::string>{"A: 1", "B: 2", "C: 3"}));
  }
}

TEST_F(OpFlags, ValueHoldingSpacesAndCommasIsNeverSplit) {
  auto flags = Resolve({"--run-cmd", "python3 -c 'print(1, 2)'", "--run-cmd", "a,b c"},
                       {&run_, &run_});
  ASSERT_TRUE(flags.ok()) << flags.status().message();
  EXPECT_EQ((*flags)[0]->at("run-cmd").as<std::string>(), "python3 -c 'print(1, 2)'");
  EXPECT_EQ((*flags)[1]->at("run-cmd").as<std::string>(), "a,b c");
}

TEST_F(OpFlags, BadValueIsAnErrorNamingTheOpAndTheFlag) {
  auto flags = Resolve({"--call-url", "u", "--call-rate", "1", "--call-rate", "fast"},
                       {&call_, &call_});
  ASSERT_FALSE(flags.ok());
  EXPECT_NE(flags.status().message().find("--op call (op 2 of the chain)"), std::string::npos)
      << flags.status().message();
  EXPECT_NE(flags.status().message().find("'--call-rate'"), std::string::npos)
      << flags.status().message();
}

// A --config file may repeat a line, one per op; a SLUICE_<FLAG> variable
// gives one value; the command line wins over both, the environment over
// the file, each as a whole (its values are not added to the others').
TEST_F(OpFlags, ConfigFileRepeatsLinesAndTheFirstSourceThatSetsAFlagWins) {
  testing::TempDir dir;
  const std::string config = dir.File("stage.ini");
  std::ofstream(config) << "call-url = file1\ncall-url = file2\nrun-cmd = from file\n";
  {
    auto flags = Resolve({"--config", config}, {&call_, &call_, &run_});
    ASSERT_TRUE(flags.ok()) << flags.status().message();
    EXPECT_EQ((*flags)[0]->at("call-url").as<std::string>(), "file1");
    EXPECT_EQ((*flags)[1]->at("call-url").as<std::string>(), "file2");
    EXPECT_EQ((*flags)[2]->at("run-cmd").as<std::string>(), "from file");
  }
  ::setenv("SLUICE_CALL_URL", "env, with a comma", 1);
  ::setenv("SLUICE_RUN_CMD", "from env", 1);
  {
    auto flags = Resolve({"--config", config, "--run-cmd", "from argv"},
                         {&call_, &call_, &run_});
    ASSERT_TRUE(flags.ok()) << flags.status().message();
    EXPECT_EQ((*flags)[0]->at("call-url").as<std::string>(), "env, with a comma");
    EXPECT_EQ((*flags)[1]->at("call-url").as<std::string>(), "env, with a comma");
    EXPECT_EQ((*flags)[2]->at("run-cmd").as<std::string>(), "from argv");
  }
  ::unsetenv("SLUICE_CALL_URL");
  ::unsetenv("SLUICE_RUN_CMD");
}

TEST_F(OpFlags, WithFlagsHandsEachInstanceItsOwnFlags) {
  const po::variables_map stage_flags, own_flags;
  const po::variables_map* seen = nullptr;
  const OpContext* seen_context = nullptr;
  OpDefinition op = CallOp();
  op.make_item = [&](const OpContext& context) -> StatusOr<std::unique_ptr<ItemOp>> {
    seen = context.flags;
    seen_context = &context;
    return std::unique_ptr<ItemOp>(new Nothing);
  };
  OpDefinition bound = WithFlags(op, &own_flags);
  OpContext context;
  context.flags = &stage_flags;
  context.thread = 3;
  ASSERT_TRUE(bound.make_item(context).ok());
  EXPECT_EQ(seen, &own_flags);
  EXPECT_EQ(context.flags, &stage_flags) << "the runtime's context is not changed";
  ASSERT_NE(seen_context, nullptr);
  EXPECT_EQ(seen_context->thread, 3);
  // The instance's context outlives the call (an op may keep a reference).
  context.thread = 9;
  EXPECT_EQ(seen_context->thread, 3);
  EXPECT_EQ(seen_context->flags, &own_flags);
}

}  // namespace
}  // namespace sluice
