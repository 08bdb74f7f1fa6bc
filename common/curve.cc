#include "common/curve.h"

#include <zmq.h>

#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>
#include <vector>

#include <spdlog/spdlog.h>

#include "common/thread.h"

namespace sluice {

namespace po = boost::program_options;

void AddCurveFlags(po::options_description& options) {
  options.add_options()
      ("curve-secret", po::value<std::string>(),
       "CURVE: this process's secret key file (sluice-keygen NAME makes "
       "NAME.key, mode 0600); every socket is then encrypted, the bound ones "
       "as servers, the connecting ones as clients")
      ("curve-server", po::value<std::string>(),
       "CURVE: the public key file (.pub) of the bound peers this process "
       "connects to")
      ("curve-allow", po::value<std::string>(),
       "CURVE: a folder of client .pub files, or a file of keys one per "
       "line; bound sockets accept only those clients (default: any CURVE "
       "client)");
}

StatusOr<std::string> ReadKeyFile(const std::string& path, const std::string& flag,
                                  bool secret) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return InvalidArgument(flag + ": cannot read '" + path + "': " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) return InvalidArgument(flag + ": '" + path + "' is not a file");
  if (secret && (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
    return InvalidArgument(flag + ": '" + path + "' is readable by others (mode " + mode +
                           "); a secret key must be mode 0600 (chmod 600 it)");
  }
  std::ifstream in(path);
  if (!in) {
    return InvalidArgument(flag + ": cannot read '" + path + "': " + std::strerror(errno));
  }
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  uint8_t decoded[32];
  if (text.size() != 40 || zmq_z85_decode(decoded, text.c_str()) == nullptr) {
    return InvalidArgument(flag + ": '" + path +
                           "' does not hold a key (40 characters of Z85 text, as "
                           "sluice-keygen writes)");
  }
  return text;
}

StatusOr<CurveConfig> ReadCurveFlags(const po::variables_map& vm) {
  CurveConfig config;
  if (!vm.count("curve-secret")) {
    for (const char* flag : {"curve-server", "curve-allow"}) {
      if (vm.count(flag)) {
        return InvalidArgument(std::string("--") + flag + " needs --curve-secret");
      }
    }
    return config;
  }
  auto secret = ReadKeyFile(vm["curve-secret"].as<std::string>(), "--curve-secret", true);
  if (!secret.ok()) return secret.status();
  config.secret = *secret;
  char public_key[41];
  if (zmq_curve_public(public_key, config.secret.c_str()) != 0) {
    return InvalidArgument("--curve-secret: cannot derive the public key: " +
                           std::string(zmq_strerror(zmq_errno())) +
                           " (is libzmq built with CURVE?)");
  }
  config.public_key = public_key;
  if (vm.count("curve-server")) {
    auto server = ReadKeyFile(vm["curve-server"].as<std::string>(), "--curve-server", false);
    if (!server.ok()) return server.status();
    config.server_public = *server;
  }
  if (vm.count("curve-allow")) {
    const std::string path = vm["curve-allow"].as<std::string>();
    config.allow_any = false;
    std::error_code ec;
    if (std::filesystem::is_regular_file(path, ec)) {
      // One key per line (a Docker secret or config is one file).
      std::ifstream in(path);
      int number = 0;
      for (std::string line; std::getline(in, line);) {
        ++number;
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (line.empty() || line[0] == '#') continue;
        uint8_t decoded[32];
        if (line.size() != 40 || zmq_z85_decode(decoded, line.c_str()) == nullptr) {
          return InvalidArgument("--curve-allow: line " + std::to_string(number) + " of '" +
                                 path + "' is not a 40-character Z85 key");
        }
        config.allowed.insert(line);
      }
    } else {
      std::filesystem::directory_iterator it(path, ec);
      if (ec) {
        return InvalidArgument("--curve-allow: cannot read '" + path + "': " + ec.message());
      }
      for (const auto& entry : it) {
        if (entry.path().extension() != ".pub") continue;
        auto key = ReadKeyFile(entry.path().string(), "--curve-allow", false);
        if (!key.ok()) return key.status();
        config.allowed.insert(*key);
      }
    }
    if (config.allowed.empty()) {
      return InvalidArgument("--curve-allow: no key in '" + path + "' (no .pub file in a "
                             "folder, no key line in a file): nobody could connect");
    }
  }
  return config;
}

Status ApplyCurve(zmq::socket_t& socket, const CurveConfig& config, bool server) {
  if (!config.enabled()) return Status::Ok();
  try {
    if (server) {
      socket.set(zmq::sockopt::curve_server, 1);
      socket.set(zmq::sockopt::curve_secretkey, config.secret.c_str());
      // Ask the ZAP handler about every client (ZapHandler). It is bound
      // before any CURVE socket exists and closed after the last one, so a
      // handshake never finds nobody to ask (libzmq would let it in).
      socket.set(zmq::sockopt::zap_domain, "sluice");
    } else {
      if (config.server_public.empty()) {
        return InvalidArgument(
            "--curve-server: a process that connects with CURVE needs the "
            "public key of the bound peers it connects to");
      }
      socket.set(zmq::sockopt::curve_serverkey, config.server_public.c_str());
      socket.set(zmq::sockopt::curve_publickey, config.public_key.c_str());
      socket.set(zmq::sockopt::curve_secretkey, config.secret.c_str());
    }
  } catch (const zmq::error_t& e) {
    return InvalidArgument(std::string("CURVE: ") + e.what() +
                           " (is libzmq built with libsodium?)");
  }
  return Status::Ok();
}

ZapHandler::ZapHandler(zmq::context_t& context, const CurveConfig& config, Counter& refused)
    : socket_(context, zmq::socket_type::rep), config_(config), refused_(refused) {}

StatusOr<std::unique_ptr<ZapHandler>> ZapHandler::Start(
    zmq::context_t& context, const std::shared_ptr<const CurveConfig>& config,
    Counter& refused) {
  if (config == nullptr || !config->enabled()) return std::unique_ptr<ZapHandler>();
  std::unique_ptr<ZapHandler> handler(new ZapHandler(context, *config, refused));
  try {
    handler->socket_.set(zmq::sockopt::linger, 0);
    // Bound before any CURVE socket exists, so that no handshake finds
    // nobody to ask (which zap_enforce_domain turns into a refusal anyway).
    handler->socket_.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    return Internal(std::string("CURVE: cannot start the ZAP handler: ") + e.what());
  }
  handler->stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (handler->stop_fd_ < 0) {
    return Internal(std::string("CURVE: eventfd: ") + std::strerror(errno));
  }
  // The socket moves to the handler's thread here (thread start is a full
  // barrier, as libzmq requires to migrate a socket) and stays there.
  auto thread = StartThread("zap", [h = handler.get()] { h->Serve(); });
  if (!thread.ok()) return thread.status();
  handler->thread_ = std::move(*thread);
  return handler;
}

ZapHandler::~ZapHandler() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (stop_fd_ >= 0) close(stop_fd_);
}

void ZapHandler::Serve() {
  std::set<std::string> logged;  // Refused keys already logged.
  std::vector<zmq::message_t> request;
  try {
    while (true) {
      zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0},
                                 {nullptr, stop_fd_, ZMQ_POLLIN, 0}};
      zmq::poll(items, 2, std::chrono::milliseconds(-1));
      if (items[1].revents & ZMQ_POLLIN) break;
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      // RFC 27: version, request id, domain, address, identity, mechanism,
      // credentials...
      request.clear();
      do {
        request.emplace_back();
        if (!socket_.recv(request.back(), zmq::recv_flags::none)) break;
      } while (request.back().more());
      const auto text = [&](size_t i) {
        return i < request.size() ? request[i].to_string() : std::string();
      };
      bool allowed = false;
      std::string client;
      if (request.size() >= 7 && text(0) == "1.0" && text(5) == "CURVE" &&
          request[6].size() == 32) {
        char z85[41];
        zmq_z85_encode(z85, request[6].data<uint8_t>(), 32);
        client = z85;
        allowed = config_.allow_any || config_.allowed.count(client) > 0;
      }
      if (!allowed) {
        refused_.Add();
        if (logged.size() < 1024 && logged.insert(client).second) {
          spdlog::warn("curve.refused: a client at {} with key {} is not in --curve-allow; "
                       "it gets nothing in and nothing out (logged once per key)",
                       text(3), client.empty() ? "(none)" : client);
        }
      }
      const std::string id = text(1);
      const std::string code = allowed ? "200" : "400";
      const std::string reason = allowed ? "OK" : "not allowed";
      socket_.send(zmq::buffer(std::string_view("1.0")), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(id), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(code), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(reason), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(allowed ? client : std::string()), zmq::send_flags::sndmore);
      socket_.send(zmq::message_t(), zmq::send_flags::none);
    }
  } catch (const zmq::error_t& e) {
    if (e.num() != ETERM) spdlog::error("curve: the ZAP handler stopped: {}", e.what());
  }
  socket_.close();
}

}  // namespace sluice
