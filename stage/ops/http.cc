// The http op: each item becomes an HTTP request, and the answer's body
// becomes the item's payload.
//
//   sluice-stage --op http --url 'http://api:8080/token/{payload}'
//                --concurrency 200 --op-timeout-ms 2000 --rate 500
//
// libcurl's multi interface does the HTTP (keep-alive connection reuse,
// redirects, TLS, HTTP/2 where the server offers it) on the op's Asio loop:
// curl tells the op which sockets to watch and when to wake it, the loop
// does the waiting. --concurrency calls are in flight per loop thread, on
// as many connections, each kept open for the next call.
//
// Answers:
//   2xx                 the body is the new payload
//   5xx, 408, 429       Transient ("http_503: ..."): retried after the
//                       runtime's backoff, then failed
//   other codes         Permanent ("http_404: ..."): failed at once, so the
//                       sink dead-letters the item with its reason
//   no answer           Transient: "unreachable" (cannot connect or
//                       resolve), "timeout", or "transport" (anything else)
//
// --batch N: items are gathered into calls of up to N (cut once full or
// after --batch-wait-ms), each a POST of the JSON array of their payloads
// to --url ({stream} allowed, not {payload} or {seq}); the answer must be
// an array of as many answers, in order (strings, or any JSON value, kept
// as its text). A failed call fails each of its items alike; a payload
// that is not UTF-8 fails alone (not_utf8). Hedging applies to single
// calls only.
//
// --rate R keeps the calls of one worker under R per second (a token bucket
// shared by its loop threads' share; retries and hedges are calls too).
// --hedge-after-ms MS sends a second request for a call that has not
// answered within MS; the first good answer wins and the other is
// abandoned (counted as http_hedged).
//
// Counters (exported as <name>_<index>_http): http_calls, http_2xx,
// http_3xx, http_4xx, http_5xx, http_other_status, http_unreachable,
// http_transport_errors, http_hedged, http_rate_waits.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <curl/curl.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <nlohmann/json.hpp>

#include "sluice/gather.h"
#include "stage/op_registry.h"

namespace sluice {
namespace {

namespace po = boost::program_options;
namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

// A piece of the --url template.
struct UrlPart {
  enum Kind { kText, kPayload, kSeq, kStream } kind;
  std::string text;  // kText only.
};

struct HttpConfig {
  std::vector<UrlPart> url;
  bool post = false;
  double rate = 0;  // Calls per second per worker; 0 = no limit.
  std::chrono::milliseconds hedge_after{0};  // 0 = never.
  std::vector<std::string> headers;
  size_t max_bytes = 0;
  long connections = 0;  // Per host and loop thread; 0 = one per slot.
};

StatusOr<std::vector<UrlPart>> ParseUrlTemplate(const std::string& url) {
  if (!url.starts_with("http://") && !url.starts_with("https://")) {
    return InvalidArgument("--url: '" + url +
                           "' does not start with http:// or https://");
  }
  std::vector<UrlPart> parts;
  size_t at = 0;
  while (at < url.size()) {
    size_t open = url.find('{', at);
    if (open == std::string::npos) {
      parts.push_back({UrlPart::kText, url.substr(at)});
      break;
    }
    if (open > at) parts.push_back({UrlPart::kText, url.substr(at, open - at)});
    size_t close = url.find('}', open);
    if (close == std::string::npos) {
      return InvalidArgument("--url: '{' at position " + std::to_string(open) +
                             " has no closing '}'");
    }
    const std::string name = url.substr(open + 1, close - open - 1);
    if (name == "payload") {
      parts.push_back({UrlPart::kPayload, {}});
    } else if (name == "seq") {
      parts.push_back({UrlPart::kSeq, {}});
    } else if (name == "stream") {
      parts.push_back({UrlPart::kStream, {}});
    } else {
      return InvalidArgument("--url: unknown placeholder {" + name +
                             "}; use {payload}, {seq} or {stream}");
    }
    at = close + 1;
  }
  return parts;
}

// The op's flags for an instance whose calls carry `batch` items (the
// stage's --batch for this op; 1 when checked before any instance exists).
StatusOr<HttpConfig> ReadConfig(const po::variables_map& vm, size_t batch) {
  HttpConfig c;
  if (!vm.count("url")) {
    return InvalidArgument(
        "--url: the http op needs a URL template, e.g. --url "
        "'http://api:8080/token/{payload}'");
  }
  auto url = ParseUrlTemplate(vm["url"].as<std::string>());
  if (!url.ok()) return url.status();
  c.url = std::move(*url);
  std::string method = vm["method"].as<std::string>();
  std::transform(method.begin(), method.end(), method.begin(), ::toupper);
  if (method != "GET" && method != "POST") {
    return InvalidArgument("--method: '" + vm["method"].as<std::string>() +
                           "' is not GET or POST");
  }
  c.post = method == "POST";
  c.rate = vm["rate"].as<double>();
  if (!std::isfinite(c.rate) || c.rate < 0) {
    return InvalidArgument("--rate: calls per second must be >= 0 (0: no limit)");
  }
  const int64_t hedge = vm["hedge-after-ms"].as<int64_t>();
  if (hedge < 0) return InvalidArgument("--hedge-after-ms: must be >= 0 (0: never)");
  c.hedge_after = std::chrono::milliseconds(hedge);
  if (vm.count("header")) {
    for (const std::string& h : vm["header"].as<std::vector<std::string>>()) {
      const size_t colon = h.find(':');
      if (colon == 0 || colon == std::string::npos ||
          h.find_first_of("\r\n") != std::string::npos) {
        return InvalidArgument("--header: '" + h + "' is not 'Name: value'");
      }
      c.headers.push_back(h);
    }
  }
  const int64_t max_bytes = vm["http-max-bytes"].as<int64_t>();
  if (max_bytes < 1) return InvalidArgument("--http-max-bytes: must be >= 1");
  c.max_bytes = static_cast<size_t>(max_bytes);
  const int64_t connections = vm["http-connections"].as<int64_t>();
  if (connections < 0 || connections > 100'000) {
    return InvalidArgument("--http-connections: must be in [0, 100000] (0: one per slot)");
  }
  c.connections = static_cast<long>(connections);
  // A batch's payloads are its body: the URL cannot name one, and it is
  // POSTed.
  if (batch > 1) {
    for (const UrlPart& part : c.url) {
      if (part.kind == UrlPart::kPayload || part.kind == UrlPart::kSeq) {
        return InvalidArgument(
            "--url: {payload} and {seq} name one item, and with --batch a "
            "call carries many (their payloads are the JSON body)");
      }
    }
    if (!vm["method"].defaulted() && !c.post) {
      return InvalidArgument("--method: a batch is POSTed; GET cannot carry it");
    }
    c.post = true;
  }
  return c;
}

// Percent-encodes all but RFC 3986's unreserved characters.
void AppendEscaped(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (unsigned char ch : text) {
    if (std::isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      out.push_back(static_cast<char>(ch));
    } else {
      out.push_back('%');
      out.push_back(kHex[ch >> 4]);
      out.push_back(kHex[ch & 15]);
    }
  }
}

class HttpOp : public AsyncOp {
 public:
  HttpOp(HttpConfig config, const OpContext& context)
      : config_(std::move(config)),
        io_(*context.io),
        curl_timer_(io_),
        rate_timer_(io_),
        rate_(config_.rate / std::max(1, context.threads)),
        burst_(std::max(1.0, rate_ / 20)),
        tokens_(burst_),
        refilled_(Clock::now()),
        // Without --op-timeout-ms, curl gives up on a call after a minute,
        // so that a server that never answers cannot hold a slot forever.
        backstop_ms_(context.timeout.count() > 0 ? 0 : 60'000),
        slots_(std::max(1, context.concurrency)),
        calls_(context.metrics->Counter("http_calls")),
        status_{&context.metrics->Counter("http_other_status"),
                &context.metrics->Counter("http_other_status"),
                &context.metrics->Counter("http_2xx"),
                &context.metrics->Counter("http_3xx"),
                &context.metrics->Counter("http_4xx"),
                &context.metrics->Counter("http_5xx")},
        unreachable_(context.metrics->Counter("http_unreachable")),
        transport_errors_(context.metrics->Counter("http_transport_errors")),
        hedged_(context.metrics->Counter("http_hedged")),
        rate_waits_(context.metrics->Counter("http_rate_waits")) {
    if (context.batch > 1) {
      gather_.emplace(context, [this](std::vector<Gather::Entry> batch) {
        LaunchBatch(std::move(batch));
      });
    }
  }

  ~HttpOp() override {
    for (auto& call : all_) {
      if (call->running) curl_multi_remove_handle(multi_, call->easy);
      curl_easy_cleanup(call->easy);
    }
    if (multi_ != nullptr) curl_multi_cleanup(multi_);  // May REMOVE sockets.
    for (auto& [fd, watch] : watches_) watch->descriptor.release();
    curl_slist_free_all(headers_);
  }

  Status Init() {
    multi_ = curl_multi_init();
    if (multi_ == nullptr) return Internal("http: curl_multi_init failed");
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &HttpOp::OnSocket);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &HttpOp::OnTimer);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    if (config_.connections > 0) {
      curl_multi_setopt(multi_, CURLMOPT_MAX_HOST_CONNECTIONS, config_.connections);
    }
    // Keep a connection per slot open between calls (curl's default cache
    // follows the handles added at the moment, and closes connections
    // whenever fewer calls happen to be in flight).
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, static_cast<long>(slots_));
    bool content_type = false;
    for (const std::string& h : config_.headers) {
      headers_ = curl_slist_append(headers_, h.c_str());
      std::string name = h.substr(0, h.find(':'));
      std::transform(name.begin(), name.end(), name.begin(), ::tolower);
      content_type = content_type || name == "content-type";
    }
    if (config_.post) {
      // The payload is the body as it is, and is sent at once (no
      // "Expect: 100-continue" round trip for bodies over 1 KiB).
      if (!content_type) {
        headers_ = curl_slist_append(headers_, gather_ ? "Content-Type: application/json"
                                                       : "Content-Type: application/octet-stream");
      }
      headers_ = curl_slist_append(headers_, "Expect:");
    }
    return Status::Ok();
  }

  void Start(Item& item, Completion done) override {
    if (gather_) {
      gather_->Add(item, done);
      return;
    }
    if (rate_ > 0 && (!waiting_.empty() || !TakeToken())) {
      rate_waits_.Add();
      waiting_.push_back({&item, done});
      ArmRateTimer();
      return;
    }
    Launch(item, done, nullptr);
  }

  void Cancel(Item& item) override {
    if (gather_ && gather_->Remove(item)) return;
    for (auto& call : all_) {
      if (!call->running) continue;
      if (call->item == &item) Abandon(call.get());
      for (Gather::Entry& e : call->batch) {
        if (e.item == &item) e.item = nullptr;
      }
    }
    std::erase_if(waiting_, [&](const Waiting& w) { return w.item == &item; });
    for (auto& batch : waiting_batches_) {
      for (Gather::Entry& e : batch) {
        if (e.item == &item) e.item = nullptr;
      }
    }
  }

 private:
  // One request in flight (or an idle, reusable easy handle).
  struct Call {
    explicit Call(asio::io_context& io) : hedge_timer(io) {}
    CURL* easy = nullptr;
    bool running = false;
    uint32_t generation = 0;  // Bumped when the call ends.
    Item* item = nullptr;  // A call for one item, or
    std::optional<Completion> done;
    std::vector<Gather::Entry> batch;  // one for a batch (--batch).
    std::string request;  // A batch's body: the JSON array of payloads.
    Call* twin = nullptr;  // The other request of a hedged pair.
    bool too_large = false;
    std::string url;
    std::string body;  // The answer so far.
    size_t max_bytes = 0;
    char error[CURL_ERROR_SIZE] = {};
    asio::steady_timer hedge_timer;
  };
  // A socket curl wants watched.
  struct Watch {
    Watch(asio::io_context& io, uint64_t i) : descriptor(io), id(i) {}
    asio::posix::stream_descriptor descriptor;
    const uint64_t id;
    int what = 0;  // CURL_POLL_IN / OUT / INOUT.
    bool reading = false, writing = false;
  };
  struct Waiting {  // A call held back by --rate.
    Item* item;
    Completion done;
  };

  void Launch(Item& item, Completion done, Call* hedge_of) {
    Call* call = Prepare(item);
    if (call == nullptr) {
      done(Transient("transport: cannot make a curl handle"));
      return;
    }
    call->item = &item;
    call->done = done;
    if (config_.post) {
      // No copy: the item stays put until the call completes.
      curl_easy_setopt(call->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(item.payload.size()));
      curl_easy_setopt(call->easy, CURLOPT_POSTFIELDS, item.payload.data());
    }
    if (Status s = Send(call); !s.ok()) {
      Give(call);
      done(std::move(s));
      return;
    }
    if (hedge_of != nullptr) {
      call->twin = hedge_of;
      hedge_of->twin = call;
    } else if (config_.hedge_after.count() > 0) {
      call->hedge_timer.expires_after(config_.hedge_after);
      call->hedge_timer.async_wait(
          [this, call, generation = call->generation](const boost::system::error_code& ec) {
            if (ec || !call->running || call->generation != generation) return;
            Hedge(call);
          });
    }
  }

  // A batch cut by the Gather: one POST of the JSON array of its payloads
  // (if the quota allows now).
  void LaunchBatch(std::vector<Gather::Entry> batch) {
    if (rate_ > 0 && (!waiting_batches_.empty() || !TakeToken())) {
      rate_waits_.Add();
      waiting_batches_.push_back(std::move(batch));
      ArmRateTimer();
      return;
    }
    SendBatch(std::move(batch));
  }

  void SendBatch(std::vector<Gather::Entry> batch) {
    std::erase_if(batch, [](const Gather::Entry& e) { return e.item == nullptr; });
    if (batch.empty()) return;
    Call* call = Prepare(*batch.front().item);
    if (call == nullptr) {
      for (Gather::Entry& e : batch) e.done(Transient("transport: cannot make a curl handle"));
      return;
    }
    // Payloads a JSON string cannot hold fail alone; the rest go.
    std::vector<Gather::Entry> refused;
    call->request = "[";
    for (Gather::Entry& e : batch) {
      std::string element;
      try {
        element = nlohmann::json(e.item->payload).dump();
      } catch (const nlohmann::json::exception&) {
        refused.push_back(e);
        continue;
      }
      if (call->request.size() > 1) call->request += ',';
      call->request += element;
      call->batch.push_back(e);
    }
    call->request += ']';
    Status sent = Status::Ok();
    if (!call->batch.empty()) {
      curl_easy_setopt(call->easy, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(call->request.size()));
      curl_easy_setopt(call->easy, CURLOPT_POSTFIELDS, call->request.data());
      sent = Send(call);
    }
    if (call->batch.empty() || !sent.ok()) {
      std::vector<Gather::Entry> failed = std::move(call->batch);
      Give(call);
      for (Gather::Entry& e : failed) e.done(sent);
    }
    for (Gather::Entry& e : refused) {
      e.done(Permanent("not_utf8: a batch is a JSON array, and this payload is not UTF-8 text"));
    }
  }

  // An idle call with its URL made from `item` (the first of a batch).
  Call* Prepare(const Item& item) {
    Call* call = Take();
    if (call == nullptr) return nullptr;
    call->too_large = false;
    call->body.clear();
    call->error[0] = '\0';
    call->url.clear();
    for (const UrlPart& part : config_.url) {
      switch (part.kind) {
        case UrlPart::kText: call->url += part.text; break;
        case UrlPart::kPayload: AppendEscaped(call->url, item.payload); break;
        case UrlPart::kSeq: call->url += std::to_string(item.seq); break;
        case UrlPart::kStream: AppendEscaped(call->url, item.stream); break;
      }
    }
    curl_easy_setopt(call->easy, CURLOPT_URL, call->url.c_str());
    return call;
  }

  Status Send(Call* call) {
    CURLMcode added = curl_multi_add_handle(multi_, call->easy);
    if (added != CURLM_OK) {
      return Transient(std::string("transport: ") + curl_multi_strerror(added));
    }
    call->running = true;
    calls_.Add();
    return Status::Ok();
  }

  // A call slower than --hedge-after-ms: ask again, if the quota allows.
  void Hedge(Call* call) {
    if (call->twin != nullptr) return;
    if (rate_ > 0 && (!waiting_.empty() || !TakeToken())) return;
    hedged_.Add();
    Launch(*call->item, *call->done, call);
  }

  Call* Take() {
    if (!idle_.empty()) {
      Call* call = idle_.back();
      idle_.pop_back();
      return call;
    }
    auto call = std::make_unique<Call>(io_);
    call->easy = curl_easy_init();
    if (call->easy == nullptr) return nullptr;
    CURL* e = call->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, call.get());
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &HttpOp::OnBody);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, call.get());
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, call->error);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 10'000L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, backstop_ms_);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "sluice");
    if (headers_ != nullptr) curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers_);
    if (config_.post) curl_easy_setopt(e, CURLOPT_POST, 1L);
    call->max_bytes = config_.max_bytes;
    all_.push_back(std::move(call));
    return all_.back().get();
  }

  void Give(Call* call) {
    call->running = false;
    ++call->generation;
    call->item = nullptr;
    call->done.reset();
    call->batch.clear();
    call->twin = nullptr;
    call->hedge_timer.cancel();
    idle_.push_back(call);
  }

  // Stops a call whose answer no longer matters.
  void Abandon(Call* call) {
    curl_multi_remove_handle(multi_, call->easy);
    if (call->twin != nullptr) call->twin->twin = nullptr;
    Give(call);
  }

  // --- token bucket (--rate) ---

  bool TakeToken() {
    const Clock::time_point now = Clock::now();
    tokens_ = std::min(burst_, tokens_ + rate_ * std::chrono::duration<double>(
                                                     now - refilled_).count());
    refilled_ = now;
    if (tokens_ < 1) return false;
    tokens_ -= 1;
    return true;
  }

  void ArmRateTimer() {
    if (rate_timer_armed_) return;
    rate_timer_armed_ = true;
    rate_timer_.expires_after(std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>((1 - tokens_) / rate_)));
    rate_timer_.async_wait([this](const boost::system::error_code& ec) {
      rate_timer_armed_ = false;
      if (ec) return;
      while (!waiting_.empty() && TakeToken()) {
        Waiting w = waiting_.front();
        waiting_.pop_front();
        Launch(*w.item, w.done, nullptr);
      }
      while (!waiting_batches_.empty() && TakeToken()) {
        std::vector<Gather::Entry> batch = std::move(waiting_batches_.front());
        waiting_batches_.pop_front();
        SendBatch(std::move(batch));
      }
      if (!waiting_.empty() || !waiting_batches_.empty()) ArmRateTimer();
    });
  }

  // --- curl's multi interface on the loop ---

  static size_t OnBody(char* data, size_t size, size_t count, void* user) {
    auto* call = static_cast<Call*>(user);
    const size_t n = size * count;
    if (call->body.size() + n > call->max_bytes) {
      call->too_large = true;
      return 0;  // curl then fails the transfer (CURLE_WRITE_ERROR).
    }
    call->body.append(data, n);
    return n;
  }

  static int OnSocket(CURL*, curl_socket_t fd, int what, void* user, void*) {
    return static_cast<HttpOp*>(user)->WatchSocket(fd, what);
  }

  static int OnTimer(CURLM*, long timeout_ms, void* user) {
    static_cast<HttpOp*>(user)->SetCurlTimer(timeout_ms);
    return 0;
  }

  // curl's deadline moves with nearly every event, and moving the loop's
  // timer costs a system call each time. So "now" is a posted handler, and
  // a timer already due before the new deadline is kept: waking early only
  // makes curl name its deadline again.
  void SetCurlTimer(long timeout_ms) {
    if (timeout_ms < 0) return;  // Nothing due: a pending wake-up is harmless.
    if (timeout_ms == 0) {
      if (!std::exchange(curl_now_posted_, true)) {
        asio::post(io_, [this] {
          curl_now_posted_ = false;
          Act(CURL_SOCKET_TIMEOUT, 0);
        });
      }
      return;
    }
    const Clock::time_point due = Clock::now() + std::chrono::milliseconds(timeout_ms);
    if (curl_timer_armed_ && curl_timer_.expiry() <= due) return;
    curl_timer_armed_ = true;
    curl_timer_.expires_at(due);
    curl_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;
      curl_timer_armed_ = false;
      Act(CURL_SOCKET_TIMEOUT, 0);
    });
  }

  int WatchSocket(curl_socket_t fd, int what) {
    auto it = watches_.find(fd);
    if (what == CURL_POLL_REMOVE) {
      if (it != watches_.end()) {
        it->second->descriptor.release();  // curl closes the socket itself.
        watches_.erase(it);
      }
      return 0;
    }
    if (it == watches_.end()) {
      auto watch = std::make_unique<Watch>(io_, next_watch_id_++);
      boost::system::error_code ec;
      watch->descriptor.assign(fd, ec);
      if (ec) return -1;  // curl fails the transfer.
      it = watches_.emplace(fd, std::move(watch)).first;
    }
    it->second->what = what;
    Arm(fd, *it->second);
    return 0;
  }

  // Waits for what curl wants of `fd` (the wait is re-armed after each
  // event while curl still wants it).
  void Arm(curl_socket_t fd, Watch& watch) {
    using Wait = asio::posix::stream_descriptor::wait_type;
    auto arm = [&](bool wanted, bool& pending, Wait wait, int event) {
      if (!wanted || pending) return;
      pending = true;
      watch.descriptor.async_wait(
          wait, [this, fd, id = watch.id, event](const boost::system::error_code& ec) {
            Watch* w = Find(fd, id);
            if (w == nullptr) return;
            (event == CURL_CSELECT_IN ? w->reading : w->writing) = false;
            if (ec) return;
            Act(fd, event);
            if ((w = Find(fd, id)) != nullptr) Arm(fd, *w);
          });
    };
    arm(watch.what & CURL_POLL_IN, watch.reading, Wait::wait_read, CURL_CSELECT_IN);
    arm(watch.what & CURL_POLL_OUT, watch.writing, Wait::wait_write, CURL_CSELECT_OUT);
  }

  Watch* Find(curl_socket_t fd, uint64_t id) {
    auto it = watches_.find(fd);
    return it == watches_.end() || it->second->id != id ? nullptr : it->second.get();
  }

  // Lets curl act on `fd` (or on its timeouts), then completes what it
  // finished.
  void Act(curl_socket_t fd, int events) {
    int running = 0;
    curl_multi_socket_action(multi_, fd, events, &running);
    finished_.clear();
    int left = 0;
    while (CURLMsg* message = curl_multi_info_read(multi_, &left)) {
      if (message->msg != CURLMSG_DONE) continue;
      Call* call = nullptr;
      curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, &call);
      finished_.push_back({call, call->generation, message->data.result});
    }
    // Completing an item may start others (and reuse handles): the list
    // is taken first, and a call that ended meanwhile is skipped.
    for (const Finished& f : finished_) {
      if (f.call->running && f.call->generation == f.generation) End(f.call, f.result);
    }
  }

  void End(Call* call, CURLcode result) {
    curl_multi_remove_handle(multi_, call->easy);
    Status status = Answer(*call, result);
    Call* twin = call->twin;
    if (twin != nullptr && !status.ok()) {
      twin->twin = nullptr;  // The other request's answer decides.
      Give(call);
      return;
    }
    if (twin != nullptr) Abandon(twin);
    if (!call->batch.empty()) {
      EndBatch(call, std::move(status));
      return;
    }
    Item& item = *call->item;
    const Completion done = *call->done;
    if (status.ok()) item.payload.swap(call->body);
    Give(call);
    done(std::move(status));
  }

  // A batch's answer: a JSON array with one answer per payload, in order
  // (strings as they are, other values as JSON text).
  void EndBatch(Call* call, Status status) {
    std::vector<Gather::Entry> batch = std::move(call->batch);
    nlohmann::json answers;
    if (status.ok()) {
      answers = nlohmann::json::parse(call->body, nullptr, false);
      if (!answers.is_array() || answers.size() != batch.size()) {
        status = Permanent("bad_answer: " + call->url + " answered a batch of " +
                           std::to_string(batch.size()) + " with " +
                           (answers.is_array() ? "an array of " + std::to_string(answers.size())
                                               : std::string("something not a JSON array")));
      }
    }
    Give(call);
    for (size_t i = 0; i < batch.size(); ++i) {
      if (batch[i].item == nullptr) continue;  // Cancelled meanwhile.
      if (status.ok()) {
        const nlohmann::json& a = answers[i];
        batch[i].item->payload = a.is_string() ? a.get<std::string>() : a.dump();
      }
      batch[i].done(status);
    }
  }

  // What an ended call's outcome means for its item.
  Status Answer(const Call& call, CURLcode result) {
    if (result != CURLE_OK) {
      const std::string why = call.error[0] ? call.error : curl_easy_strerror(result);
      switch (result) {
        case CURLE_WRITE_ERROR:
          if (call.too_large) {
            return Permanent("too_large: answer of " + call.url + " over --http-max-bytes (" +
                             std::to_string(config_.max_bytes) + ")");
          }
          break;
        case CURLE_OPERATION_TIMEDOUT:
          return Transient("timeout: " + why);
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
          unreachable_.Add();
          return Transient("unreachable: " + why);
        default:
          break;
      }
      transport_errors_.Add();
      return Transient("transport: " + why);
    }
    long code = 0;
    curl_easy_getinfo(call.easy, CURLINFO_RESPONSE_CODE, &code);
    status_[code >= 200 && code < 600 ? code / 100 : 0]->Add();
    if (code >= 200 && code < 300) return Status::Ok();
    std::string message = "http_" + std::to_string(code) + ": " + call.url + " answered " +
                          std::to_string(code);
    if (!call.body.empty()) {
      message += ": " + call.body.substr(0, 200);
    }
    if (code >= 500 || code == 408 || code == 429) return Transient(std::move(message));
    return Permanent(std::move(message));
  }

  struct Finished {
    Call* call;
    uint32_t generation;
    CURLcode result;
  };

  const HttpConfig config_;
  asio::io_context& io_;
  CURLM* multi_ = nullptr;
  curl_slist* headers_ = nullptr;
  asio::steady_timer curl_timer_;
  bool curl_timer_armed_ = false;  // A wait on curl_timer_ is pending.
  bool curl_now_posted_ = false;   // An Act() for curl's timeouts is posted.
  std::unordered_map<curl_socket_t, std::unique_ptr<Watch>> watches_;
  uint64_t next_watch_id_ = 0;
  std::vector<std::unique_ptr<Call>> all_;  // Grows to the calls in flight.
  std::vector<Call*> idle_;
  std::vector<Finished> finished_;
  // --rate: this loop's share, a bucket of up to burst_ calls.
  asio::steady_timer rate_timer_;
  bool rate_timer_armed_ = false;
  const double rate_;
  const double burst_;
  double tokens_;
  Clock::time_point refilled_;
  std::deque<Waiting> waiting_;
  std::deque<std::vector<Gather::Entry>> waiting_batches_;
  std::optional<Gather> gather_;  // With --batch.
  const long backstop_ms_;
  const int slots_;
  OpCounter& calls_;
  OpCounter* const status_[6];  // By status class; [0], [1]: other.
  OpCounter& unreachable_;
  OpCounter& transport_errors_;
  OpCounter& hedged_;
  OpCounter& rate_waits_;
};

}  // namespace

void RegisterHttpOp() {
  static RegisterOp http(OpDefinition{
      .name = "http",
      .summary = "each item becomes an HTTP request (--url with {payload}, "
                 "{seq}, {stream}); the answer's body is the new payload",
      .make_async = [](const OpContext& context) -> StatusOr<std::unique_ptr<AsyncOp>> {
        static std::once_flag once;
        std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
        auto config = ReadConfig(*context.flags, context.batch);
        if (!config.ok()) return config.status();
        auto op = std::make_unique<HttpOp>(std::move(*config), context);
        Status s = op->Init();
        if (!s.ok()) return s;
        return std::unique_ptr<AsyncOp>(std::move(op));
      },
      .flags = [](po::options_description& flags) {
        flags.add_options()
            ("url", po::value<std::string>(),
             "the request's URL; {payload}, {seq} and {stream} are replaced "
             "by the item's (percent-encoded)")
            ("method", po::value<std::string>()->default_value("GET"),
             "GET, or POST (the payload is the request body)")
            ("header", po::value<std::vector<std::string>>(),
             "'Name: value' added to every request (repeat the flag for more; "
             "each http op of the chain gets every one)")
            ("rate", po::value<double>()->default_value(0),
             "most calls per second of this worker, retries and hedges "
             "included (0: no limit)")
            ("hedge-after-ms", po::value<int64_t>()->default_value(0),
             "a call unanswered after this long gets a second request; the "
             "first good answer wins (0: never)")
            ("http-connections", po::value<int64_t>()->default_value(0),
             "most connections per host and loop thread (0: one per "
             "--concurrency slot); calls beyond wait for a free one")
            ("http-max-bytes", po::value<int64_t>()->default_value(64 << 20),
             "largest answer accepted; a larger one fails the item (too_large)");
      },
      .check = [](const po::variables_map& vm) { return ReadConfig(vm, 1).status(); },
      .default_concurrency = 64,
      .batches = true,
  });
}

}  // namespace sluice
