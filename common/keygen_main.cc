// sluice-keygen NAME: a CURVE key pair for --curve-secret / --curve-server /
// --curve-allow. Writes NAME.key (the secret key, mode 0600) and NAME.pub
// (the public key), each the 40-character Z85 text of zmq_curve_keypair and
// a newline. Never overwrites: an existing file is an error (exit 64).
// Its only flags are --help and --version, as every Sluice binary has; it
// reads no SLUICE_* environment and no --config.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <string>

#include <zmq.h>

namespace {

constexpr int kExitOk = 0, kExitUsage = 64, kExitInternal = 70;

// Creates `path` with `mode` (never replacing a file) and writes `text`.
bool WriteNew(const std::string& path, const std::string& text, mode_t mode) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) {
    std::cerr << "sluice-keygen: cannot create '" << path << "': " << std::strerror(errno)
              << (errno == EEXIST ? " (keys are never overwritten)" : "") << "\n";
    return false;
  }
  bool ok = write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
            fchmod(fd, mode) == 0;  // Whatever the umask says.
  ok = close(fd) == 0 && ok;
  if (!ok) std::cerr << "sluice-keygen: cannot write '" << path << "'\n";
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage =
      "Usage: sluice-keygen NAME\n\n"
      "Writes NAME.key (secret, mode 0600) and NAME.pub (public): a CURVE key\n"
      "pair for --curve-secret, --curve-server and --curve-allow. Never\n"
      "overwrites a file (exit 64 if one exists).\n\n"
      "Flags:\n"
      "  -h [ --help ]  print this help and exit\n"
      "  --version      print the version and exit\n";
  if (argc == 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::cout << usage;
    return kExitOk;
  }
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::cout << "sluice-keygen " << SLUICE_VERSION << "\n";
    return kExitOk;
  }
  if (argc != 2 || argv[1][0] == '\0' || argv[1][0] == '-') {
    std::cerr << usage;
    return kExitUsage;
  }
  char public_key[41], secret_key[41];
  if (zmq_curve_keypair(public_key, secret_key) != 0) {
    std::cerr << "sluice-keygen: " << zmq_strerror(zmq_errno())
              << " (is libzmq built with CURVE?)\n";
    return kExitInternal;
  }
  const std::string name = argv[1];
  if (!WriteNew(name + ".key", std::string(secret_key) + "\n", 0600)) return kExitUsage;
  if (!WriteNew(name + ".pub", std::string(public_key) + "\n", 0644)) {
    unlink((name + ".key").c_str());
    return kExitUsage;
  }
  std::cout << name << ".key " << name << ".pub\n";
  return kExitOk;
}
