#include "common/config.h"

#include <cstdlib>
#include <fstream>

#include <gtest/gtest.h>

#include "common/flags.h"

namespace sluice {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.add_options()
        ("count", po::value<int64_t>()->default_value(1), "count")
        ("idle-timeout", po::value<double>()->default_value(0), "idle");
    unsetenv("SLUICE_COUNT");
    unsetenv("SLUICE_IDLE_TIMEOUT");
  }
  void TearDown() override {
    unsetenv("SLUICE_COUNT");
    unsetenv("SLUICE_IDLE_TIMEOUT");
  }
  std::optional<int> Parse(std::vector<const char*> args) {
    args.insert(args.begin(), "prog");
    vm_ = po::variables_map();
    return ParseCommandLine({"prog", "test"}, options_,
                            static_cast<int>(args.size()), args.data(), vm_);
  }
  std::string WriteConfig(const std::string& text) {
    std::string path = ::testing::TempDir() + "/sluice-config-test.ini";
    std::ofstream(path) << text;
    return path;
  }
  po::options_description options_;
  po::variables_map vm_;
};

TEST_F(ConfigTest, FlagOverridesEnvironmentOverridesConfigFile) {
  std::string config = WriteConfig("count = 3\nidle-timeout = 9\n");
  setenv("SLUICE_COUNT", "2", 1);
  setenv("SLUICE_IDLE_TIMEOUT", "8", 1);
  ASSERT_EQ(Parse({"--config", config.c_str(), "--count", "1"}), std::nullopt);
  EXPECT_EQ(vm_["count"].as<int64_t>(), 1);
  EXPECT_EQ(vm_["idle-timeout"].as<double>(), 8);
  unsetenv("SLUICE_IDLE_TIMEOUT");
  ASSERT_EQ(Parse({"--config", config.c_str()}), std::nullopt);
  EXPECT_EQ(vm_["count"].as<int64_t>(), 2);
  EXPECT_EQ(vm_["idle-timeout"].as<double>(), 9);
}

TEST_F(ConfigTest, UnknownFlagIsAUsageError) {
  EXPECT_EQ(Parse({"--bogus"}), 64);
}

// Issue 21: Program_options keeps a word that belongs to no flag as a
// nameless option and store() drops it, so "--count 3 4" ran with 3.
TEST_F(ConfigTest, StrayPositionalArgumentIsAUsageErrorNamingIt) {
  for (std::vector<const char*> args :
       {std::vector<const char*>{"--count", "3", "4"}, {"extra"}, {"--", "--count"}}) {
    ::testing::internal::CaptureStderr();
    EXPECT_EQ(Parse(args), 64) << args.back();
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("unexpected argument '" + std::string(args.back()) + "'"),
              std::string::npos)
        << err;
  }
  EXPECT_EQ(Parse({"--count=3"}), std::nullopt);
  EXPECT_EQ(vm_["count"].as<int64_t>(), 3);
}

TEST_F(ConfigTest, MalformedNumberIsAUsageError) {
  EXPECT_EQ(Parse({"--count", "many"}), 64);
  setenv("SLUICE_COUNT", "many", 1);
  EXPECT_EQ(Parse({}), 64);
}

TEST_F(ConfigTest, UnreadableOrMalformedConfigFileIsAUsageError) {
  EXPECT_EQ(Parse({"--config", "/nonexistent/sluice.ini"}), 64);
  std::string config = WriteConfig("no-such-flag = 1\n");
  EXPECT_EQ(Parse({"--config", config.c_str()}), 64);
}

TEST_F(ConfigTest, HelpAndVersionExitZero) {
  EXPECT_EQ(Parse({"--help"}), 0);
  EXPECT_EQ(Parse({"--version"}), 0);
}

TEST(ParseIntList, SplitsAndChecksEachElement) {
  auto ok = ParseIntList("10,5", "threads", 1, 100);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, (std::vector<int64_t>{10, 5}));
  EXPECT_FALSE(ParseIntList("10,,5", "threads", 1, 100).ok());
  EXPECT_FALSE(ParseIntList("10,x", "threads", 1, 100).ok());
  EXPECT_FALSE(ParseIntList("0", "threads", 1, 100).ok());
  EXPECT_FALSE(ParseIntList("-3", "threads", 1, 100).ok());
  EXPECT_FALSE(ParseIntList("", "threads", 1, 100).ok());
}

TEST(CommonFlags, OutOfRangeValuesAreRejectedByName) {
  po::options_description options;
  AddCommonFlags(options, kSenderFlags | kReceiverFlags);
  po::variables_map vm;
  const char* args[] = {"prog", "--hwm", "0"};
  ASSERT_EQ(ParseCommandLine({"prog", ""}, options, 3, args, vm), std::nullopt);
  auto flags = ReadCommonFlags(vm, kSenderFlags | kReceiverFlags);
  ASSERT_FALSE(flags.ok());
  EXPECT_NE(flags.status().message().find("--hwm"), std::string::npos);
}

}  // namespace
}  // namespace sluice
