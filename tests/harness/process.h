// tests/harness/process.h
//
// Process runs one real Sluice binary for a test or a benchmark: its stdout and
// stderr are collected by reader threads, WaitReady() blocks until the READY
// line (no sleeps), Wait() blocks until exit with a deadline (pidfd + poll).
// The destructor kills and reaps whatever is still running, so a failing test
// leaves nothing behind.
//
// Thread safety: one test thread drives a Process; readers are internal.
#ifndef SLUICE_TESTS_HARNESS_PROCESS_H_
#define SLUICE_TESTS_HARNESS_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace sluice::testing {

// Path of a built binary: "sluice-stage" -> "<build>/bin/sluice-stage".
std::string BinaryPath(const std::string& name);

class Process {
 public:
  // Starts argv[0] (a path) with the rest as arguments; `stdin_data`, if
  // given, is written to its stdin, which is then closed.
  // Failures of the harness itself (cannot spawn, no READY line) go to
  // `on_failure`; by default they are printed to stderr.
  using FailureHandler = std::function<void(const std::string&)>;
  explicit Process(std::vector<std::string> argv,
                   std::optional<std::string> stdin_data = std::nullopt,
                   std::vector<std::string> extra_env = {},
                   FailureHandler on_failure = nullptr);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }

  // Waits for a stdout line starting with "READY" and returns its key=value
  // pairs. Reports a failure and returns {} on timeout or exit.
  std::map<std::string, std::string> WaitReady(
      std::chrono::milliseconds timeout = std::chrono::seconds(20));

  // Waits until `ready(stdout, stderr)` holds, re-checking whenever output
  // arrives. False on timeout or once both streams closed without it.
  bool WaitForOutput(
      const std::function<bool(const std::string&, const std::string&)>& ready,
      std::chrono::milliseconds timeout);

  // Waits for exit; returns the exit code (128+N if killed by signal N), or
  // nullopt if still running at the deadline.
  std::optional<int> Wait(std::chrono::milliseconds timeout);
  bool running();

  void Signal(int signal_number);

  std::string out();
  std::string err();
  // The last "counters {...}" JSON the process logged on stderr.
  nlohmann::json LastCounters();
  // Resident set size in KiB from /proc, 0 if gone.
  long RssKib() const;
  // Its anonymous part (heap, stacks, buffers): what grows with the data a
  // process holds, without the shared libraries' pages it has touched.
  long AnonKib() const;
  // Its peak resident set size in KiB over its whole life (the kernel's
  // maxrss at exit); 0 until Wait() has reaped it.
  long PeakRssKib() const { return peak_rss_kib_; }

 private:
  void ReadLoop(int fd, std::string* sink);

  FailureHandler on_failure_;
  pid_t pid_ = -1;
  int pidfd_ = -1;
  std::optional<int> exit_code_;
  long peak_rss_kib_ = 0;
  std::mutex mu_;
  std::condition_variable changed_;
  std::string out_;          // Guarded by mu_.
  std::string err_;          // Guarded by mu_.
  int open_streams_ = 2;     // Guarded by mu_.
  std::thread out_reader_, err_reader_, stdin_writer_;
};

// Reads a whole file ("" if absent).
std::string ReadFile(const std::string& path);
// A fresh temporary directory, removed with its contents at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace sluice::testing

#endif  // SLUICE_TESTS_HARNESS_PROCESS_H_
