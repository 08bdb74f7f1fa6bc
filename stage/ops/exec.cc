// exec: an op in any language. Each worker thread of the op keeps one
// long-lived co-process (--exec 'CMD') and talks to it over its stdin and
// stdout; its stderr goes to the stage's log, one line per line.
//
// Protocol (docs/writing-ops.md, "In any language"): items go in order,
// answers come back in the same order, one answer per item.
//   --exec-framing lines  one payload per line in ("\n"-terminated), one
//                         result per line out. A payload holding "\n" cannot
//                         be framed: that item fails (newline_in_payload).
//   --exec-framing lp     4-byte big-endian length, then the bytes, both
//                         ways; any bytes.
//   Failing an item: the answer "!error REASON: detail" (lines) fails it for
//   good, "!retry REASON: detail" asks for a retry. In lp framing the
//   length 0xFFFFFFFF (error) or 0xFFFFFFFE (retry) is followed by a
//   length-prefixed message.
//
// The op is of the batch shape: a worker writes a run of up to 64 items and
// reads their answers as they come (poll, both directions at once), so that
// a co-process is never idle waiting for one round trip per item.
//
// Faults: a co-process that exits is started again on the next run, and the
// items it had not answered are retried (reason coprocess_died); one that
// gives no answer within --op-timeout-ms is killed (the item: timeout). A
// command that cannot start stops the stage before READY with exit 69.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <wordexp.h>

#include <cerrno>
#include <cstring>
#include <deque>

#include "common/log.h"
#include "stage/op_registry.h"

extern char** environ;

namespace sluice {
namespace {

namespace po = boost::program_options;

enum class Framing { kLines, kLengthPrefixed };

constexpr uint32_t kLpError = 0xFFFFFFFF;
constexpr uint32_t kLpRetry = 0xFFFFFFFE;
constexpr size_t kMaxStderrLine = 4096;

struct ExecConfig {
  std::vector<std::string> argv;
  std::string command;
  Framing framing = Framing::kLines;
  size_t max_answer_bytes = 64 << 20;
};

StatusOr<std::vector<std::string>> SplitCommand(const std::string& command) {
  wordexp_t words;
  int rc = wordexp(command.c_str(), &words, WRDE_NOCMD);
  if (rc != 0) {
    const char* why = rc == WRDE_BADCHAR ? "an unquoted | & ; < > ( ) { } or newline (wrap it in sh -c '...')"
                      : rc == WRDE_CMDSUB ? "a command substitution (wrap it in sh -c '...')"
                      : rc == WRDE_SYNTAX ? "a syntax error (unbalanced quotes?)"
                                          : "it cannot be expanded";
    return InvalidArgument("--exec '" + command + "': " + why);
  }
  std::vector<std::string> argv(words.we_wordv, words.we_wordv + words.we_wordc);
  wordfree(&words);
  if (argv.empty()) return InvalidArgument("--exec is empty");
  return argv;
}

StatusOr<ExecConfig> ReadConfig(const po::variables_map& vm) {
  ExecConfig config;
  if (!vm.count("exec") || vm["exec"].as<std::string>().empty()) {
    return InvalidArgument("needs --exec 'CMD' (the co-process to run)");
  }
  config.command = vm["exec"].as<std::string>();
  auto argv = SplitCommand(config.command);
  if (!argv.ok()) return argv.status();
  config.argv = std::move(*argv);
  std::string framing = vm["exec-framing"].as<std::string>();
  if (framing == "lines") {
    config.framing = Framing::kLines;
  } else if (framing == "lp") {
    config.framing = Framing::kLengthPrefixed;
  } else {
    return InvalidArgument("--exec-framing must be lines or lp, got '" + framing + "'");
  }
  int64_t max = vm["exec-max-bytes"].as<int64_t>();
  if (max < 1 || max > (int64_t{1} << 30)) {
    return InvalidArgument("--exec-max-bytes must be in [1, 1073741824], got " +
                           std::to_string(max));
  }
  config.max_answer_bytes = static_cast<size_t>(max);
  int64_t procs = vm["exec-procs"].as<int64_t>();
  if (procs < 0 || procs > 1024) {
    return InvalidArgument("--exec-procs must be in [0, 1024], got " + std::to_string(procs));
  }
  return config;
}

// One running co-process and the three pipes to it.
class Coprocess {
 public:
  static StatusOr<std::unique_ptr<Coprocess>> Spawn(const ExecConfig& config,
                                                    const std::string& worker) {
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC) != 0) return Unavailable(std::string("pipe: ") + std::strerror(errno));
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
      return Unavailable(std::string("pipe: ") + std::strerror(errno));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    // The child starts with default signal handling and an empty mask.
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<std::string> args = config.argv;
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::string worker_env = "SLUICE_WORKER=" + worker;
    std::vector<char*> env;
    for (char** e = environ; *e; ++e) {
      if (std::strncmp(*e, "SLUICE_WORKER=", 14) != 0) env.push_back(*e);
    }
    env.push_back(worker_env.data());
    env.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawnp(&pid, argv[0], &actions, &attr, argv.data(), env.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    if (rc != 0) {
      close(in[1]);
      close(out[0]);
      close(err[0]);
      return Unavailable("cannot start co-process '" + config.command +
                         "': " + std::strerror(rc));
    }
    for (int fd : {in[1], out[0], err[0]}) {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    spdlog::info("{}: started co-process {} (pid {})", worker, config.command, pid);
    return std::unique_ptr<Coprocess>(new Coprocess(pid, in[1], out[0], err[0], worker));
  }

  ~Coprocess() { Stop(std::chrono::milliseconds(2000)); }

  // Closes stdin, gives the co-process `grace` to exit, then kills it.
  void Stop(std::chrono::milliseconds grace) {
    if (pid_ < 0) return;
    CloseFd(in_);
    auto deadline = std::chrono::steady_clock::now() + grace;
    while (out_ >= 0 || err_ >= 0) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) break;
      if (!Pump(left, nullptr)) break;
    }
    Kill();
  }

  void Kill() {
    if (pid_ < 0) return;
    CloseFd(in_);
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
    }
    if (WIFEXITED(status)) {
      exit_ = "exited with status " + std::to_string(WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
      exit_ = std::string("killed by signal ") + strsignal(WTERMSIG(status));
    }
    FlushStderr();
    CloseFd(out_);
    CloseFd(err_);
    pid_ = -1;
  }

  const std::string& exit_description() const { return exit_; }
  bool alive() const { return pid_ >= 0 && out_ >= 0; }
  pid_t pid() const { return pid_; }

  // Writes from `to_write` (advancing `written`), reads into `answers`, and
  // logs stderr, for up to `wait`. False once stdout reached EOF or failed.
  bool Pump(std::chrono::milliseconds wait, std::string* answers,
            const std::string* to_write = nullptr, size_t* written = nullptr) {
    pollfd fds[3];
    nfds_t n = 0;
    int out_index = -1, err_index = -1, in_index = -1;
    if (out_ >= 0) {
      fds[n] = {out_, POLLIN, 0};
      out_index = static_cast<int>(n++);
    }
    if (err_ >= 0) {
      fds[n] = {err_, POLLIN, 0};
      err_index = static_cast<int>(n++);
    }
    if (to_write && in_ >= 0 && *written < to_write->size()) {
      fds[n] = {in_, POLLOUT, 0};
      in_index = static_cast<int>(n++);
    }
    if (n == 0) return false;
    int rc = poll(fds, n, static_cast<int>(std::max<int64_t>(0, wait.count())));
    if (rc < 0 && errno != EINTR) return false;
    if (rc <= 0) return out_ >= 0;
    char buffer[65536];
    if (err_index >= 0 && fds[err_index].revents) {
      ssize_t got = read(err_, buffer, sizeof(buffer));
      if (got > 0) {
        LogStderr(std::string_view(buffer, static_cast<size_t>(got)));
      } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
        FlushStderr();
        CloseFd(err_);
      }
    }
    if (in_index >= 0 && fds[in_index].revents) {
      ssize_t put = write(in_, to_write->data() + *written, to_write->size() - *written);
      if (put > 0) {
        *written += static_cast<size_t>(put);
      } else if (put < 0 && errno != EAGAIN && errno != EINTR) {
        CloseFd(in_);  // EPIPE: it exited; stdout's EOF tells the rest.
      }
    }
    if (out_index >= 0 && fds[out_index].revents) {
      ssize_t got = read(out_, buffer, sizeof(buffer));
      if (got > 0) {
        if (answers) answers->append(buffer, static_cast<size_t>(got));
      } else if (got == 0 || (errno != EAGAIN && errno != EINTR)) {
        CloseFd(out_);
        return false;
      }
    }
    return out_ >= 0;
  }

 private:
  Coprocess(pid_t pid, int in, int out, int err, std::string worker)
      : pid_(pid), in_(in), out_(out), err_(err), worker_(std::move(worker)) {}

  static void CloseFd(int& fd) {
    if (fd >= 0) close(fd);
    fd = -1;
  }

  void LogStderr(std::string_view text) {
    for (char c : text) {
      if (c == '\n' || stderr_line_.size() >= kMaxStderrLine) {
        spdlog::info("{} [pid {}] {}", worker_, pid_, stderr_line_);
        stderr_line_.clear();
        if (c == '\n') continue;
      }
      stderr_line_ += c;
    }
  }
  void FlushStderr() {
    if (!stderr_line_.empty()) {
      spdlog::info("{} [pid {}] {}", worker_, pid_, stderr_line_);
      stderr_line_.clear();
    }
  }

  pid_t pid_;
  int in_, out_, err_;
  std::string worker_;
  std::string stderr_line_;
  std::string exit_;
};

class ExecOp : public BatchOp {
 public:
  ExecOp(ExecConfig config, const OpContext& context)
      : config_(std::move(config)), timeout_(context.timeout),
        worker_(context.worker) {}

  Status StartCoprocess() {
    auto process = Coprocess::Spawn(config_, worker_);
    if (!process.ok()) return process.status();
    process_ = std::move(*process);
    return Status::Ok();
  }

  void ProcessBatch(std::span<Item> items, std::span<Status> statuses) override {
    // Frame what can be framed; the rest fails at once.
    outgoing_.clear();
    sent_.clear();
    for (size_t i = 0; i < items.size(); ++i) {
      const std::string& payload = items[i].payload;
      if (config_.framing == Framing::kLines) {
        if (payload.find('\n') != std::string::npos) {
          statuses[i] = Permanent(
              "newline_in_payload: --exec-framing lines cannot carry a payload "
              "holding a newline (use --exec-framing lp)");
          continue;
        }
      } else if (payload.size() >= kLpRetry) {
        statuses[i] = Permanent("too_large: payload over 4 GiB");
        continue;
      }
      Frame(payload);
      sent_.push_back(i);
    }
    // Items behind the one a co-process was holding when it died or hung
    // are not at fault: they go to a fresh co-process at once, without
    // spending an attempt. Each round settles at least the item held.
    while (!sent_.empty()) {
      size_t settled = Exchange(items, statuses);
      sent_.erase(sent_.begin(), sent_.begin() + static_cast<std::ptrdiff_t>(settled));
      if (sent_.empty()) break;
      outgoing_.clear();
      for (size_t i : sent_) Frame(items[i].payload);
    }
  }

 private:
  void Frame(const std::string& payload) {
    if (config_.framing == Framing::kLengthPrefixed) {
      AppendLength(static_cast<uint32_t>(payload.size()));
    }
    outgoing_ += payload;
    if (config_.framing == Framing::kLines) outgoing_ += '\n';
  }

  // Sends outgoing_ (the framed items of sent_) and reads their answers.
  // Returns how many items of sent_, from the front, are settled: all of
  // them, or up to and including the one the co-process held when it died,
  // hung or sent an oversized answer (that one's status says why).
  size_t Exchange(std::span<Item> items, std::span<Status> statuses) {
    if (!process_ || !process_->alive()) {
      process_.reset();
      Status started = StartCoprocess();
      if (!started.ok()) {
        for (size_t i : sent_) statuses[i] = Transient("coprocess_start: " + started.message());
        return sent_.size();
      }
    }
    answers_.clear();
    size_t written = 0, parsed = 0, answered = 0;
    auto head_since = std::chrono::steady_clock::now();
    while (answered < sent_.size()) {
      std::chrono::milliseconds wait(1000);
      if (timeout_.count() > 0) {
        wait = std::chrono::duration_cast<std::chrono::milliseconds>(
            head_since + timeout_ - std::chrono::steady_clock::now());
        if (wait.count() <= 0) {
          process_->Kill();
          process_.reset();
          statuses[sent_[answered]] = Transient(
              "timeout: co-process gave no answer within " +
              std::to_string(timeout_.count()) + " ms; killed it");
          return answered + 1;
        }
      }
      bool open = process_->Pump(wait, &answers_, &outgoing_, &written);
      while (answered < sent_.size()) {
        std::optional<Status> got = NextAnswer(parsed, items[sent_[answered]]);
        if (!got) break;
        if (got->code() == StatusCode::kInternal) {
          // Over --exec-max-bytes: the stream of answers is out of step.
          process_->Kill();
          process_.reset();
          statuses[sent_[answered]] = Permanent(got->message());
          return answered + 1;
        }
        statuses[sent_[answered]] = std::move(*got);
        ++answered;
        head_since = std::chrono::steady_clock::now();
      }
      if (!open && answered < sent_.size()) {
        process_->Kill();
        statuses[sent_[answered]] = Transient(
            "coprocess_died: co-process '" + config_.command + "' " +
            process_->exit_description() + " while holding this item");
        process_.reset();
        return answered + 1;
      }
    }
    return answered;
  }

  void AppendLength(uint32_t n) {
    char bytes[4] = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                     static_cast<char>(n >> 8), static_cast<char>(n)};
    outgoing_.append(bytes, 4);
  }
  static uint32_t ReadLength(const std::string& s, size_t at) {
    auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<uint8_t>(s[at + i])); };
    return b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
  }

  // The next complete answer in answers_ (from `parsed` on), applied to
  // `item`: nullopt if it has not fully arrived; kInternal if too large.
  std::optional<Status> NextAnswer(size_t& parsed, Item& item) {
    std::string_view body;
    std::optional<StatusCode> verdict;
    if (config_.framing == Framing::kLines) {
      size_t end = answers_.find('\n', parsed);
      if (end == std::string::npos) {
        if (answers_.size() - parsed > config_.max_answer_bytes) {
          return Status(StatusCode::kInternal, "output_too_large: an answer line "
                        "passed --exec-max-bytes");
        }
        return std::nullopt;
      }
      body = std::string_view(answers_).substr(parsed, end - parsed);
      parsed = end + 1;
      if (body.starts_with("!error ")) {
        verdict = StatusCode::kInvalidArgument;
        body.remove_prefix(7);
      } else if (body.starts_with("!retry ")) {
        verdict = StatusCode::kUnavailable;
        body.remove_prefix(7);
      }
    } else {
      if (answers_.size() - parsed < 4) return std::nullopt;
      uint32_t n = ReadLength(answers_, parsed);
      size_t header = 4;
      if (n == kLpError || n == kLpRetry) {
        if (answers_.size() - parsed < 8) return std::nullopt;
        verdict = n == kLpError ? StatusCode::kInvalidArgument : StatusCode::kUnavailable;
        n = ReadLength(answers_, parsed + 4);
        header = 8;
      }
      if (n > config_.max_answer_bytes) {
        return Status(StatusCode::kInternal, "output_too_large: an answer of " +
                      std::to_string(n) + " bytes passed --exec-max-bytes");
      }
      if (answers_.size() - parsed < header + n) return std::nullopt;
      body = std::string_view(answers_).substr(parsed + header, n);
      parsed += header + n;
    }
    if (verdict) return Status(*verdict, std::string(body));
    item.payload.assign(body.data(), body.size());
    return Status::Ok();
  }

  const ExecConfig config_;
  const std::chrono::milliseconds timeout_;
  const std::string worker_;
  std::unique_ptr<Coprocess> process_;
  std::string outgoing_, answers_;  // Reused between runs.
  std::vector<size_t> sent_;
};

}  // namespace

void RegisterExecOp() {
  static RegisterOp exec(OpDefinition{
      .name = "exec",
      .summary = "runs each item through a co-process in any language "
                 "(--exec CMD, over stdin/stdout)",
      .make_batch = [](const OpContext& context) -> StatusOr<std::unique_ptr<BatchOp>> {
        signal(SIGPIPE, SIG_IGN);  // A dead co-process must not kill the stage.
        auto config = ReadConfig(*context.flags);
        if (!config.ok()) return config.status();
        auto op = std::make_unique<ExecOp>(std::move(*config), context);
        Status started = op->StartCoprocess();
        if (!started.ok()) return started;
        return std::unique_ptr<BatchOp>(std::move(op));
      },
      .flags = [](po::options_description& flags) {
        flags.add_options()
            ("exec", po::value<std::string>(),
             "the co-process to run: a command line, split like a shell does "
             "(no pipes or substitutions; use sh -c '...' for those)")
            ("exec-framing", po::value<std::string>()->default_value("lines"),
             "lines: one payload per line each way; lp: 4-byte big-endian "
             "length prefix, any bytes")
            ("exec-procs", po::value<int64_t>()->default_value(0),
             "co-processes (one per worker thread); 0: as many as --threads")
            ("exec-max-bytes", po::value<int64_t>()->default_value(64 << 20),
             "largest answer accepted from the co-process");
      },
      .check = [](const po::variables_map& vm) { return ReadConfig(vm).status(); },
      .default_threads = 1,
      .max_run = 64,
  });
}

}  // namespace sluice
