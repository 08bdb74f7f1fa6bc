#include "stage/ops.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

TEST(Ops, TokenThenResultMapsIToResultI) {
  std::string payload = "42";
  EXPECT_TRUE(ApplyOp(OpKind::kToken, payload));
  EXPECT_EQ(payload, "token_42");
  EXPECT_TRUE(ApplyOp(OpKind::kResult, payload));
  EXPECT_EQ(payload, "result_42");
}

TEST(Ops, ResultOfSomethingNotATokenIsFlaggedButNotLost) {
  std::string payload = "7";
  EXPECT_FALSE(ApplyOp(OpKind::kResult, payload));
  EXPECT_EQ(payload, "result_7");
}

TEST(Ops, PassLeavesThePayloadAlone) {
  std::string payload = "anything\n";
  EXPECT_TRUE(ApplyOp(OpKind::kPass, payload));
  EXPECT_EQ(payload, "anything\n");
}

TEST(Ops, UnknownOpNameListsTheKnownOnes) {
  auto parsed = ParseOpKind("tokn");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.status().message().find("token, result, pass"),
            std::string::npos);
  EXPECT_EQ(*ParseOpKind("result"), OpKind::kResult);
}

TEST(Ops, DefaultsFollowTheClassicJob) {
  EXPECT_EQ(DefaultsFor(OpKind::kToken).threads, 10);
  EXPECT_EQ(DefaultsFor(OpKind::kToken).max_latency.count(), 10);
  EXPECT_EQ(DefaultsFor(OpKind::kResult).threads, 5);
  EXPECT_EQ(DefaultsFor(OpKind::kResult).max_latency.count(), 5);
  EXPECT_EQ(DefaultsFor(OpKind::kPass).max_latency.count(), 0);
}

}  // namespace
}  // namespace sluice
