// Issue 10, point 2: the http op against a local server standing in for the
// token and result APIs (tests/harness/test_api_server.cc), with the faults
// a remote API has: latency, 503s, 404s, stragglers, quotas, no server.
#include <signal.h>

#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/integration/job.h"

namespace sluice::testing {
namespace {

// sluice-test-api on an ephemeral port; Stats() stops it and returns what
// it counted.
class TestApi {
 public:
  explicit TestApi(Args flags = {}) {
    flags.insert(flags.begin(), BinaryPath("sluice-test-api"));
    server_ = std::make_unique<Process>(
        flags, std::nullopt, std::vector<std::string>{},
        [](const std::string& message) { ADD_FAILURE() << message; });
    base_ = "http://127.0.0.1:" + server_->WaitReady()["port"];
  }
  const std::string& base() const { return base_; }
  nlohmann::json Stats() {
    server_->Signal(SIGTERM);
    EXPECT_EQ(server_->Wait(std::chrono::seconds(20)), 0) << server_->err();
    const std::string out = server_->out();
    const size_t at = out.find("STATS ");
    if (at == std::string::npos) {
      ADD_FAILURE() << "no STATS line: " << out;
      return {};
    }
    return nlohmann::json::parse(out.substr(at + 6, out.find('\n', at) - at - 6));
  }

 private:
  std::unique_ptr<Process> server_;
  std::string base_;
};

uint64_t Counter(Process& stage, const std::string& name) {
  return stage.LastCounters().value(name, uint64_t{0});
}

// The whole job through HTTP: token by GET with the payload in the path,
// result by POST with the token as the body. One distinct request in 7 is
// answered 503 once (retried, then right); token i with i % 50 == 0 does
// not exist (404: dead-lettered at once, never retried).
TEST(HttpOp, TokenThenResultThroughAnApiIsExactWith503sRetriedAnd404sDeadLettered) {
  TestApi api({"--latency-ms", "5", "--unavailable-every", "7", "--not-found-every", "50"});
  Chain chain;
  const Args common = {"--op", "http", "--concurrency", "40", "--retries", "3",
                       "--retry-backoff-ms", "5"};
  Args token = common, result = common;
  token.insert(token.end(), {"--url", api.base() + "/token/{payload}"});
  result.insert(result.end(), {"--url", api.base() + "/result", "--method", "POST"});
  chain.Run({token, result}, {"--count", "1000"}, {"--ordered"});
  ASSERT_EQ(chain.Finish(), 65) << chain.sink->err();  // Complete, 20 failed.

  std::string expected;
  for (int i = 0; i < 1000; ++i) {
    if (i % 50 != 0) expected += "result_" + std::to_string(i) + "\n";
  }
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), expected);
  nlohmann::json report = chain.Report();
  EXPECT_EQ(report["complete"], true);
  EXPECT_EQ(report["unique"], 1000);
  EXPECT_EQ(report["failed"], 20);
  EXPECT_EQ(report["failed_by_reason"]["http_404"], 20) << report.dump();
  std::set<std::string> dead_payloads;
  for (const auto& line : chain.DeadLetters()) {
    EXPECT_EQ(line["op"], "http");
    EXPECT_EQ(line["reason"], "http_404");
    dead_payloads.insert(line["payload"].get<std::string>());
  }
  EXPECT_EQ(dead_payloads.size(), 20u);
  EXPECT_TRUE(dead_payloads.count("0") && dead_payloads.count("950"));

  // 1000 token and 980 result requests are distinct: every 7th of the 1980
  // got one 503 and was asked again.
  nlohmann::json stats = api.Stats();
  const uint64_t unavailable = 1980 / 7;
  EXPECT_EQ(stats["status"]["503"], unavailable) << stats.dump();
  EXPECT_EQ(stats["status"]["404"], 20) << "a 404 is not retried";
  EXPECT_EQ(stats["requests"], 1980 + unavailable);
  EXPECT_EQ(Counter(*chain.stages[0], "retries_0_http") +
                Counter(*chain.stages[1], "retries_0_http"),
            unavailable);
  EXPECT_EQ(Counter(*chain.stages[0], "http_5xx_0_http") +
                Counter(*chain.stages[1], "http_5xx_0_http"),
            unavailable);
  EXPECT_EQ(Counter(*chain.stages[0], "http_4xx_0_http"), 20u);
  EXPECT_EQ(Counter(*chain.stages[0], "http_calls_0_http") +
                Counter(*chain.stages[1], "http_calls_0_http"),
            1980 + unavailable);
  // Keep-alive: connections are reused, at most one per slot.
  EXPECT_LE(stats["connections"].get<int>(), 80) << stats.dump();
}

// An API nobody serves: every item fails with the reason, none is lost,
// and the stage keeps running.
TEST(HttpOp, UnreachableUrlFailsEachItemWithTheReason) {
  Chain chain;
  chain.Run({{"--op", "http", "--url", "http://127.0.0.1:1/token/{payload}",
              "--retries", "1", "--retry-backoff-ms", "1"}},
            {"--count", "50"});
  ASSERT_EQ(chain.Finish(), 65) << chain.sink->err();
  nlohmann::json report = chain.Report();
  EXPECT_EQ(report["complete"], true);
  EXPECT_EQ(report["failed"], 50);
  EXPECT_EQ(report["failed_by_reason"]["unreachable"], 50) << report.dump();
  auto dead = chain.DeadLetters();
  ASSERT_EQ(dead.size(), 50u);
  EXPECT_NE(dead[0]["detail"].get<std::string>().find("127.0.0.1"), std::string::npos)
      << dead[0].dump();
  EXPECT_EQ(dead[0]["attempts"], 2);
}

// --op-timeout-ms abandons a call that does not answer; the retry gets
// through. Every 10th distinct request waits 5 s the first time it is
// asked; the job does not wait for them.
// The producer's replays are held off (--rto-min-ms) so that the stage's
// own timeout and retry are what bring the slow items through: on a loaded
// machine a replay could otherwise win, the sink complete and exit, and the
// stage's late retries be left with nobody to send them to (the stage then
// waits out its drain timeout on SIGTERM, as designed).
TEST(HttpOp, CallPastTheTimeoutIsAbandonedAndRetried) {
  TestApi api({"--slow-every", "10", "--slow-ms", "5000"});
  Chain chain;
  chain.Run({{"--op", "http", "--url", api.base() + "/token/{payload}", "--concurrency",
              "20", "--op-timeout-ms", "200", "--retries", "3", "--retry-backoff-ms", "1"}},
            {"--count", "200", "--rto-min-ms", "5000"}, {"--ordered"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  std::string expected;
  for (int i = 0; i < 200; ++i) expected += "token_" + std::to_string(i) + "\n";
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), expected);
  EXPECT_GE(Counter(*chain.stages[0], "timeouts_0_http"), 20u);
  EXPECT_GE(Counter(*chain.stages[0], "retries_0_http"), 20u);
}

// --hedge-after-ms: a straggler gets a second request and the first
// answer wins, so the slow answers are not waited for.
TEST(HttpOp, StragglerIsHedgedAndTheFirstAnswerWins) {
  TestApi api({"--slow-every", "10", "--slow-ms", "5000"});
  Chain chain;
  chain.Run({{"--op", "http", "--url", api.base() + "/token/{payload}", "--concurrency",
              "20", "--hedge-after-ms", "100"}},
            {"--count", "200", "--rto-min-ms", "5000"}, {"--ordered"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  std::string expected;
  for (int i = 0; i < 200; ++i) expected += "token_" + std::to_string(i) + "\n";
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), expected);
  const uint64_t hedged = Counter(*chain.stages[0], "http_hedged_0_http");
  EXPECT_GE(hedged, 20u);  // Every slow one, and perhaps a few more.
  EXPECT_EQ(Counter(*chain.stages[0], "timeouts_0_http"), 0u);
  EXPECT_EQ(Counter(*chain.stages[0], "retries_0_http"), 0u);
  EXPECT_EQ(api.Stats()["requests"], 200 + hedged);
}

// --rate R: the API never sees more than R calls (plus the bucket's burst,
// R/20) in any second.
TEST(HttpOp, RateKeepsTheCallsPerSecondUnderTheQuota) {
  TestApi api;
  Chain chain;
  chain.Run({{"--op", "http", "--url", api.base() + "/token/{payload}", "--concurrency",
              "50", "--rate", "40"}},
            {"--count", "100"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err();
  ExpectCompleteExactly(chain.Report(), 100);
  nlohmann::json stats = api.Stats();
  EXPECT_EQ(stats["requests"], 100);
  EXPECT_LE(stats["max_per_second"].get<int>(), 40 + 2) << stats.dump();
  EXPECT_GT(Counter(*chain.stages[0], "http_rate_waits_0_http"), 0u);
}

// Issue 10, point 3: --batch N POSTs the JSON array of up to N payloads
// and reads an array back; 503s of a batch are retried item by item.
TEST(HttpOp, BatchedCallsPostJsonArraysAndTheJobStaysExact) {
  TestApi api({"--latency-ms", "5", "--unavailable-every", "5"});
  Chain chain;
  chain.Run({{"--op", "http", "--url", api.base() + "/token/batch", "--batch", "50",
              "--batch-wait-ms", "20", "--retry-backoff-ms", "5", "--retries", "8"},
             {"--op", "http", "--url", api.base() + "/result/batch", "--batch", "50",
              "--retry-backoff-ms", "5", "--retries", "8"}},
            {"--count", "2000"}, {"--ordered"});
  ASSERT_EQ(chain.Finish(), 0) << chain.Report().dump();
  ExpectCompleteExactly(chain.Report(), 2000);
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), ExpectedResults(2000));
  const uint64_t calls = Counter(*chain.stages[0], "http_calls_0_http") +
                         Counter(*chain.stages[1], "http_calls_0_http");
  nlohmann::json stats = api.Stats();
  EXPECT_EQ(stats["requests"], calls);
  // 4000 items in calls of up to 50; a call cut early (the wait passed,
  // or a retry) carries fewer, but most are full.
  EXPECT_LE(calls, 4000u / 10) << stats.dump();
  EXPECT_GT(stats["status"]["503"].get<int>(), 0);
}

// An answer that is not an array of one answer per payload fails the
// call's items (bad_answer), never mixes them up.
TEST(HttpOp, BatchAnswerOfTheWrongShapeFailsItsItems) {
  TestApi api;
  Chain chain;
  // POST /token answers "token_" + the body: not a JSON array.
  chain.Run({{"--op", "http", "--url", api.base() + "/token", "--batch", "10",
              "--retries", "0"}},
            {"--count", "30"});
  ASSERT_EQ(chain.Finish(), 65) << chain.sink->err();
  nlohmann::json report = chain.Report();
  EXPECT_EQ(report["failed"], 30);
  EXPECT_EQ(report["failed_by_reason"]["bad_answer"], 30) << report.dump();
}

// Issue 21, point 4: an op's own flags are per op. One stage runs two http
// ops with different URLs and two exec ops with different commands; every
// item shows all four, in chain order: /token/I gives token_I, only
// /result/token_I gives result_I; the first co-process appends ", one" and
// the second upper-cases (after the first: "RESULT_I, ONE", not
// "RESULT_I, one"). The commands hold spaces and commas: nothing splits them.
// Flags given once (--method, --exec-framing) apply to both ops.
TEST(HttpOp, TwoHttpAndTwoExecOpsInOneStageEachRunWithTheirOwnFlags) {
  TestApi api;
  const std::string python = "/usr/bin/python3 -c ";
  const std::string append_one =
      python + "'import sys; [print(line.rstrip(\"\\n\") + \", one\", flush=True) "
               "for line in sys.stdin]'";
  const std::string upper_case =
      python + "'import sys; [print(line.rstrip(\"\\n\").upper(), flush=True) "
               "for line in sys.stdin]'";
  Chain chain;
  chain.Run({{"--op", "http,http,exec,exec",
              "--url", api.base() + "/token/{payload}",
              "--url", api.base() + "/result/{payload}",
              "--exec", append_one, "--exec", upper_case,
              "--method", "GET", "--exec-framing", "lines"}},
            {"--count", "500"}, {"--ordered"});
  ASSERT_EQ(chain.Finish(), 0) << chain.sink->err() << chain.stages[0]->err();
  ExpectCompleteExactly(chain.Report(), 500);
  std::string expected;
  for (int i = 0; i < 500; ++i) expected += "RESULT_" + std::to_string(i) + ", ONE\n";
  EXPECT_EQ(ReadFile(chain.dir.File("out.txt")), expected);
  EXPECT_EQ(Counter(*chain.stages[0], "http_calls_0_http"), 500u);
  EXPECT_EQ(Counter(*chain.stages[0], "http_calls_1_http"), 500u);
  nlohmann::json stats = api.Stats();
  EXPECT_EQ(stats["requests"], 1000) << stats.dump();
  EXPECT_EQ(stats["status"]["200"], 1000) << stats.dump();
}

// Issue 21, point 4: a repeated op flag must be given once, or once per op
// that takes it; any other count is a usage error naming the flag, the count
// and the ops. A bad value names the op it was meant for.
TEST(HttpOp, RepeatedOpFlagGivenTheWrongNumberOfTimesExits64) {
  const std::vector<std::pair<Args, std::vector<std::string>>> cases = {
      {{"--op", "http,pass,http", "--url", "http://h/a", "--url", "http://h/b", "--url",
        "http://h/c"},
       {"--url is given 3 times", "2 ops", "1: http, 3: http"}},
      {{"--op", "http", "--url", "http://h/a", "--url", "http://h/b"},
       {"--url is given 2 times", "1 op", "1: http"}},
      {{"--op", "exec,exec,exec", "--exec", "cat", "--exec", "cat -u"},
       {"--exec is given 2 times", "3 ops", "1: exec, 2: exec, 3: exec"}},
      {{"--op", "exec,exec", "--exec", "cat", "--exec-procs", "1", "--exec-procs", "2",
        "--exec-procs", "3"},
       {"--exec-procs is given 3 times", "2 ops"}},
      {{"--op", "http,http", "--url", "http://h/a", "--url", "ftp://h/b"},
       {"--op http (op 2 of the chain)", "--url", "ftp://h/b"}},
      {{"--op", "http,http", "--url", "http://h/a", "--rate", "1", "--rate", "fast"},
       {"--op http (op 2 of the chain)", "--rate", "fast"}},
  };
  for (const auto& [args, wanted] : cases) {
    std::string err;
    EXPECT_EQ(RunToExit("sluice-stage", args, nullptr, &err), 64) << args[1];
    for (const std::string& text : wanted) {
      EXPECT_NE(err.find(text), std::string::npos) << text << " in: " << err;
    }
  }
  std::string out;
  EXPECT_EQ(RunToExit("sluice-stage", {"--op", "http", "--help"}, &out), 0);
  EXPECT_NE(out.find("--url"), std::string::npos) << out;
  EXPECT_NE(out.find("the k-th goes to the k-th op that takes it"), std::string::npos) << out;
}

TEST(HttpOp, BadFlagValuesExit64NamingTheFlag) {
  const std::vector<std::pair<Args, std::string>> cases = {
      {{"--op", "http"}, "--url"},
      {{"--op", "http", "--url", "ftp://host/x"}, "--url"},
      {{"--op", "http", "--url", "http://host/{nope}"}, "--url"},
      {{"--op", "http", "--url", "http://host/{payload"}, "--url"},
      {{"--op", "http", "--url", "http://host/", "--method", "PUT"}, "--method"},
      {{"--op", "http", "--url", "http://host/", "--rate", "-1"}, "--rate"},
      {{"--op", "http", "--url", "http://host/", "--rate", "fast"}, "rate"},
      {{"--op", "http", "--url", "http://host/", "--hedge-after-ms", "-5"}, "--hedge-after-ms"},
      {{"--op", "http", "--url", "http://host/", "--header", "no colon"}, "--header"},
      {{"--op", "http", "--url", "http://host/", "--http-max-bytes", "0"}, "--http-max-bytes"},
      {{"--op", "http", "--url", "http://host/", "--http-connections", "-1"},
       "--http-connections"},
      {{"--op", "http", "--url", "http://host/{payload}", "--batch", "10"}, "--url"},
      {{"--op", "http", "--url", "http://host/", "--batch", "10", "--method", "GET"},
       "--method"},
      {{"--op", "http", "--url", "http://host/", "--batch", "0"}, "--batch"},
      {{"--op", "exec", "--exec", "cat", "--batch", "10"}, "--batch"},
      {{"--op", "token", "--batch", "10", "--batch-wait-ms", "-1"}, "--batch-wait-ms"},
  };
  for (const auto& [args, flag] : cases) {
    std::string err;
    EXPECT_EQ(RunToExit("sluice-stage", args, nullptr, &err), 64) << flag;
    EXPECT_NE(err.find(flag), std::string::npos) << err;
  }
}

}  // namespace
}  // namespace sluice::testing
