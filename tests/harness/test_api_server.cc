// tests/harness/test_api_server.cc
//
// sluice-test-api: a local HTTP/1.1 server standing in for the remote APIs
// of the token-then-result job, for the http op's tests and benchmark.
//
//   GET  /token/I         -> token_I       POST /token   (body I)        -> token_I
//   GET  /result/token_I  -> result_I      POST /result  (body token_I)  -> result_I
//   POST /token/batch, /result/batch: a JSON array of payloads in, the
//        array of answers out (400 if any element cannot be answered)
//
// Faults on demand, deterministic so that a test can count on them:
//   --latency-ms MAX        each answer waits uniformly in [0, MAX)
//   --unavailable-every N   every Nth distinct request (method, path and
//                           body) is answered 503 the first time it is seen
//   --not-found-every M     token I with I % M == 0 answers 404
//   --slow-every S --slow-ms MS
//                           every Sth distinct request waits MS instead,
//                           the first time it is seen
//
// One thread, Boost.Asio and Beast, keep-alive connections. Prints
// "READY port=P", and on SIGINT/SIGTERM one line "STATS {json}" (requests,
// connections, answers by status, most requests in flight and most
// requests in any one-second window), then exits 0.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <deque>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <unordered_set>
#include <utility>  // Before Asio: Boost 1.74's awaitable.hpp needs std::exchange.

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace po = boost::program_options;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

struct Options {
  int port = 0;
  int latency_ms = 0;
  int unavailable_every = 0;
  int not_found_every = 0;
  int slow_every = 0;
  int slow_ms = 0;
};

// Undoes percent-encoding ("%2F" -> "/"); a stray '%' stays as it is.
std::string Decode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(text[i + 1]) &&
        std::isxdigit(text[i + 2])) {
      out.push_back(static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

class Server {
 public:
  Server(asio::io_context& io, const Options& options)
      : io_(io), options_(options), acceptor_(io), random_(std::random_device{}()) {}

  int Listen() {
    tcp::endpoint at(asio::ip::make_address("127.0.0.1"), options_.port);
    acceptor_.open(at.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(at);
    acceptor_.listen(asio::socket_base::max_listen_connections);
    Accept();
    return acceptor_.local_endpoint().port();
  }

  void Stop() { acceptor_.close(); }

  nlohmann::json Stats() const {
    nlohmann::json by_status = nlohmann::json::object();
    for (const auto& [code, n] : by_status_) by_status[std::to_string(code)] = n;
    return {{"requests", requests_},
            {"connections", connections_},
            {"status", by_status},
            {"max_in_flight", max_in_flight_},
            {"max_per_second", max_per_second_}};
  }

  // What to answer, and after how long.
  struct Answer {
    http::status status;
    std::string body;
    Clock::duration delay;
  };

  Answer Handle(const http::request<http::string_body>& request) {
    ++requests_;
    NoteArrival();
    Answer answer{http::status::ok, {}, Delay()};
    const std::string target(request.target());
    // A request seen for the first time may be picked for a fault.
    if (options_.unavailable_every > 0 || options_.slow_every > 0) {
      std::string key = std::string(request.method_string()) + " " + target + " " + request.body();
      if (seen_.insert(std::move(key)).second) {
        const size_t n = seen_.size();
        if (options_.slow_every > 0 && n % static_cast<size_t>(options_.slow_every) == 0) {
          answer.delay = std::chrono::milliseconds(options_.slow_ms);
        }
        if (options_.unavailable_every > 0 &&
            n % static_cast<size_t>(options_.unavailable_every) == 0) {
          answer.status = http::status::service_unavailable;
          answer.body = "try again";
          return answer;
        }
      }
    }
    const bool post = request.method() == http::verb::post;
    std::string_view path(target);
    if (path == "/token/batch" || path == "/result/batch") {
      return Batch(path == "/token/batch", request.body(), answer);
    }
    std::string input;
    bool token;
    if (post && (path == "/token" || path == "/result")) {
      token = path == "/token";
      input = request.body();
    } else if (!post && path.starts_with("/token/")) {
      token = true;
      input = Decode(path.substr(7));
    } else if (!post && path.starts_with("/result/")) {
      token = false;
      input = Decode(path.substr(8));
    } else {
      answer.status = http::status::not_found;
      answer.body = "no such API";
      return answer;
    }
    One(token, input, answer);
    return answer;
  }

  void Finished(const Answer& answer) { ++by_status_[static_cast<int>(answer.status)]; }
  void Opened() { ++connections_; }
  void Began() { max_in_flight_ = std::max(max_in_flight_, ++in_flight_); }
  void Ended() { --in_flight_; }

 private:
  // The answer to one input of the token or the result API.
  void One(bool token, const std::string& input, Answer& answer) {
    if (token) {
      if (options_.not_found_every > 0) {
        try {
          size_t used = 0;
          const long long i = std::stoll(input, &used);
          if (used == input.size() && i % options_.not_found_every == 0) {
            answer.status = http::status::not_found;
            answer.body = "no token for " + input;
            return;
          }
        } catch (const std::exception&) {
        }
      }
      answer.body = "token_" + input;
      return;
    }
    if (!input.starts_with("token_")) {
      answer.status = http::status::bad_request;
      answer.body = "not a token";
      return;
    }
    answer.body = "result_" + input.substr(6);
  }

  Answer Batch(bool token, const std::string& body, Answer& answer) {
    nlohmann::json in = nlohmann::json::parse(body, nullptr, false);
    if (!in.is_array()) {
      answer.status = http::status::bad_request;
      answer.body = "expected a JSON array";
      return answer;
    }
    nlohmann::json out = nlohmann::json::array();
    for (const auto& element : in) {
      Answer one{http::status::ok, {}, {}};
      if (!element.is_string()) {
        answer.status = http::status::bad_request;
        answer.body = "expected strings";
        return answer;
      }
      One(token, element.get<std::string>(), one);
      if (one.status != http::status::ok) {
        answer.status = one.status;
        answer.body = one.body;
        return answer;
      }
      out.push_back(one.body);
    }
    answer.body = out.dump();
    return answer;
  }

  Clock::duration Delay() {
    if (options_.latency_ms <= 0) return {};
    std::uniform_int_distribution<int> pick(0, options_.latency_ms * 1000 - 1);
    return std::chrono::microseconds(pick(random_));
  }

  // Keeps the arrivals of the last second to find the busiest second.
  void NoteArrival() {
    const Clock::time_point now = Clock::now();
    arrivals_.push_back(now);
    while (now - arrivals_.front() >= std::chrono::seconds(1)) arrivals_.pop_front();
    max_per_second_ = std::max<uint64_t>(max_per_second_, arrivals_.size());
  }

  void Accept();

  asio::io_context& io_;
  const Options options_;
  tcp::acceptor acceptor_;
  std::mt19937 random_;
  std::unordered_set<std::string> seen_;
  std::deque<Clock::time_point> arrivals_;
  std::map<int, uint64_t> by_status_;
  uint64_t requests_ = 0, connections_ = 0, max_per_second_ = 0;
  uint64_t in_flight_ = 0, max_in_flight_ = 0;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Server& server)
      : stream_(std::move(socket)), delay_(stream_.get_executor()), server_(server) {}

  void Read() {
    request_ = {};
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (!ec) self->Answer();
                     });
  }

 private:
  void Answer() {
    server_.Began();
    Server::Answer answer = server_.Handle(request_);
    response_ = {answer.status, request_.version()};
    response_.set(http::field::content_type, "text/plain");
    response_.keep_alive(request_.keep_alive());
    response_.body() = std::move(answer.body);
    response_.prepare_payload();
    delay_.expires_after(answer.delay);
    delay_.async_wait([self = shared_from_this(), answer](beast::error_code) {
      self->server_.Ended();
      self->server_.Finished(answer);
      http::async_write(self->stream_, self->response_,
                        [self](beast::error_code ec, size_t) {
                          if (ec) return;
                          if (!self->response_.keep_alive()) {
                            beast::error_code ignored;
                            self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                            return;
                          }
                          self->Read();
                        });
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  asio::steady_timer delay_;
  Server& server_;
};

void Server::Accept() {
  acceptor_.async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec) return;
    Opened();
    std::make_shared<Session>(std::move(socket), *this)->Read();
    Accept();
  });
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  po::options_description flags("sluice-test-api flags");
  flags.add_options()
      ("help", "this help")
      ("port", po::value<int>(&options.port)->default_value(0), "port on 127.0.0.1 (0: any free)")
      ("latency-ms", po::value<int>(&options.latency_ms)->default_value(0),
       "each answer waits uniformly in [0, MS)")
      ("unavailable-every", po::value<int>(&options.unavailable_every)->default_value(0),
       "every Nth distinct request answers 503 the first time")
      ("not-found-every", po::value<int>(&options.not_found_every)->default_value(0),
       "token I with I % M == 0 answers 404")
      ("slow-every", po::value<int>(&options.slow_every)->default_value(0),
       "every Sth distinct request waits --slow-ms the first time")
      ("slow-ms", po::value<int>(&options.slow_ms)->default_value(0), "see --slow-every");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, flags), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::cerr << "sluice-test-api: " << e.what() << "\n";
    return 64;
  }
  if (vm.count("help")) {
    std::cout << flags;
    return 0;
  }
  asio::io_context io(1);
  Server server(io, options);
  int port = 0;
  try {
    port = server.Listen();
  } catch (const std::exception& e) {
    std::cerr << "sluice-test-api: cannot listen: " << e.what() << "\n";
    return 69;
  }
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](beast::error_code, int) {
    server.Stop();
    std::cout << "STATS " << server.Stats().dump() << std::endl;
    io.stop();
  });
  std::cout << "READY port=" << port << std::endl;
  io.run();
  return 0;
}
