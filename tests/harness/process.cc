#include "tests/harness/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <iostream>

extern char** environ;

namespace sluice::testing {

std::string BinaryPath(const std::string& name) {
  return std::string(SLUICE_BIN_DIR) + "/" + name;
}

Process::Process(std::vector<std::string> argv,
                 std::optional<std::string> stdin_data,
                 std::vector<std::string> extra_env,
                 FailureHandler on_failure)
    : on_failure_(on_failure ? std::move(on_failure)
                             : [](const std::string& message) {
                                 std::cerr << "harness: " << message << "\n";
                               }) {
  int out_pipe[2], err_pipe[2], in_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0 ||
      pipe2(in_pipe, O_CLOEXEC) != 0) {
    on_failure_(std::string("pipe: ") + std::strerror(errno));
    return;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) {
    // Tests set everything by flag: no SLUICE_* leaks in from the caller.
    if (std::strncmp(*e, "SLUICE_", 7) != 0) env_strings.emplace_back(*e);
  }
  for (std::string& e : extra_env) env_strings.push_back(e);
  std::vector<char*> env;
  for (std::string& e : env_strings) env.push_back(e.data());
  env.push_back(nullptr);
  int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), env.data());
  posix_spawn_file_actions_destroy(&actions);
  close(out_pipe[1]);
  close(err_pipe[1]);
  close(in_pipe[0]);
  if (rc != 0) {
    on_failure_("cannot start " + argv[0] + ": " + std::strerror(rc));
    pid_ = -1;
    close(out_pipe[0]);
    close(err_pipe[0]);
    close(in_pipe[1]);
    return;
  }
  pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
  out_reader_ = std::thread([this, fd = out_pipe[0]] { ReadLoop(fd, &out_); });
  err_reader_ = std::thread([this, fd = err_pipe[0]] { ReadLoop(fd, &err_); });
  stdin_writer_ = std::thread([fd = in_pipe[1], data = std::move(stdin_data)] {
    if (data) {
      size_t done = 0;
      while (done < data->size()) {
        ssize_t n = write(fd, data->data() + done, data->size() - done);
        if (n <= 0) break;
        done += static_cast<size_t>(n);
      }
    }
    close(fd);
  });
}

Process::~Process() {
  if (pid_ > 0 && !exit_code_) {
    kill(pid_, SIGKILL);
    Wait(std::chrono::seconds(10));
  }
  if (stdin_writer_.joinable()) stdin_writer_.join();
  if (out_reader_.joinable()) out_reader_.join();
  if (err_reader_.joinable()) err_reader_.join();
  if (pidfd_ >= 0) close(pidfd_);
}

void Process::ReadLoop(int fd, std::string* sink) {
  char buffer[4096];
  while (true) {
    ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::lock_guard<std::mutex> lock(mu_);
    sink->append(buffer, static_cast<size_t>(n));
    changed_.notify_all();
  }
  close(fd);
  std::lock_guard<std::mutex> lock(mu_);
  --open_streams_;
  changed_.notify_all();
}

std::map<std::string, std::string> Process::WaitReady(
    std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  size_t line_start = std::string::npos;
  auto found = [&] {
    size_t pos = out_.rfind("READY", std::string::npos);
    while (pos != std::string::npos) {
      if (pos == 0 || out_[pos - 1] == '\n') {
        if (out_.find('\n', pos) != std::string::npos) {
          line_start = pos;
          return true;
        }
      }
      if (pos == 0) break;
      pos = out_.rfind("READY", pos - 1);
    }
    return open_streams_ < 2;  // stdout closed: it will never come.
  };
  if (!changed_.wait_for(lock, timeout, found) || line_start == std::string::npos) {
    on_failure_("no READY line from pid " + std::to_string(pid_) + " within " +
                std::to_string(timeout.count()) + " ms; stdout:\n" + out_ +
                "\nstderr:\n" + err_);
    return {};
  }
  std::string line = out_.substr(line_start, out_.find('\n', line_start) - line_start);
  std::map<std::string, std::string> fields;
  std::istringstream words(line.substr(5));
  std::string word;
  while (words >> word) {
    size_t eq = word.find('=');
    if (eq != std::string::npos) fields[word.substr(0, eq)] = word.substr(eq + 1);
  }
  return fields;
}

bool Process::WaitForOutput(
    const std::function<bool(const std::string&, const std::string&)>& ready,
    std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  bool met = false;
  changed_.wait_for(lock, timeout, [&] {
    met = ready(out_, err_);
    return met || open_streams_ == 0;
  });
  return met;
}

std::optional<int> Process::Wait(std::chrono::milliseconds timeout) {
  if (exit_code_) return exit_code_;
  if (pid_ <= 0) return -1;
  pollfd fds = {pidfd_, POLLIN, 0};
  int n = poll(&fds, 1, static_cast<int>(timeout.count()));
  if (n == 0) return std::nullopt;
  int status = 0;
  rusage usage{};
  if (wait4(pid_, &status, 0, &usage) != pid_) return std::nullopt;
  peak_rss_kib_ = usage.ru_maxrss;
  exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  // Let the readers see EOF so that out()/err() are complete.
  std::unique_lock<std::mutex> lock(mu_);
  changed_.wait_for(lock, std::chrono::seconds(10), [&] { return open_streams_ == 0; });
  return exit_code_;
}

bool Process::running() { return !Wait(std::chrono::milliseconds(0)); }

void Process::Signal(int signal_number) {
  if (pid_ > 0 && !exit_code_) kill(pid_, signal_number);
}

std::string Process::out() {
  std::lock_guard<std::mutex> lock(mu_);
  return out_;
}

std::string Process::err() {
  std::lock_guard<std::mutex> lock(mu_);
  return err_;
}

nlohmann::json Process::LastCounters() {
  std::string text = err();
  size_t pos = text.rfind("counters {");
  if (pos == std::string::npos) return nlohmann::json::object();
  size_t start = pos + std::strlen("counters ");
  size_t end = text.find('\n', start);
  return nlohmann::json::parse(text.substr(start, end - start), nullptr, false);
}

namespace {
// A "Name:   123 kB" field of /proc/PID/status, 0 if the process is gone.
long StatusKib(pid_t pid, const std::string& field) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(field.size()));
  }
  return 0;
}
}  // namespace

long Process::RssKib() const { return StatusKib(pid_, "VmRSS:"); }

long Process::AnonKib() const { return StatusKib(pid_, "RssAnon:"); }

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

TempDir::TempDir() {
  char pattern[] = "/tmp/sluice-test.XXXXXX";
  path_ = mkdtemp(pattern);
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

}  // namespace sluice::testing
