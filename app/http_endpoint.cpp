#include "http_endpoint.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <limits>
#include <optional>
#include <stdexcept>
#include <thread>

namespace nephra::app {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kRequestTimeout = std::chrono::seconds(10);
// Monitoring needs a handful of connections; a scanner or a stuck client must not take the node's descriptors.
constexpr long kMaxSessions = 64;
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);

// Shared by the sessions of one endpoint.
struct Shared {
  HttpHandler handler;
  HttpLimits limits;
  std::atomic<long> sessions{0};
  std::atomic<long> uploads{0};  // POSTs read or being handled: one at a time, the others get 503
  asio::thread_pool upload_thread{1};
};

HttpResponse plain(int status, std::string text) { return {status, "text/plain; charset=utf-8", std::move(text)}; }

// One connection: read a request, answer, repeat while the client keeps it alive.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, Shared& shared) : stream_(std::move(socket)), shared_(shared) { ++shared_.sessions; }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() { --shared_.sessions; }

  // Headers first: a body is read only for the POST that holds the upload slot, up to its limit, so no other
  // request can make the node hold a large body in memory.
  void read() {
    parser_.emplace();
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());  // judged in on_header, per request
    head_ = false;
    stream_.expires_after(kRequestTimeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

 private:
  static constexpr size_t kMaxPlainBody = size_t{8} * 1024;
  static constexpr auto kUploadTimeout = std::chrono::seconds(120);  // a 32 MB upload over a slow link
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
  Shared& shared_;
  bool head_ = false;
  bool counted_upload_ = false;

  void on_header(beast::error_code ec) {
    if (ec) {
      spdlog::debug("HTTP_HEADER_FAILED reason=\"{}\"", ec.message());
      stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
      return;
    }
    const auto& request = parser_->get();
    const size_t length = parser_->content_length().value_or(0);
    const size_t limit = shared_.limits.max_body_bytes;
    if (request.method() == http::verb::post && limit > 0 && length > 0) {
      if (length > limit) {
        return respond(plain(413, "upload larger than the limit of " + std::to_string(limit) + " bytes\n"), 11, false);
      }
      if (shared_.uploads.fetch_add(1) > 0) {
        --shared_.uploads;
        return respond(plain(503, "another upload is being classified; try again in a moment\n"), 11, false);
      }
      counted_upload_ = true;
      parser_->body_limit(limit);
      stream_.expires_after(kUploadTimeout);
      if (beast::iequals(request[http::field::expect], "100-continue")) {
        http::response<http::empty_body> go_on{http::status::continue_, request.version()};
        beast::error_code ignored;  // a client that cannot take these few bytes fails on the body read instead
        http::write(stream_.socket(), go_on, ignored);
      }
    } else if (length > kMaxPlainBody) {  // refused before its body is read; the connection closes after the answer
      const bool upload = request.method() == http::verb::post;
      return respond(upload ? plain(405, "uploads are off (http.try_page = false)\n")
                            : plain(413, "a request body is only taken by POST /try\n"),
                     11, false);
    } else {
      parser_->body_limit(kMaxPlainBody);
    }
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code rec, size_t) { self->on_read(rec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::body_limit) {  // chunked, or a body larger than its Content-Length said
      return respond(
          plain(413, "upload larger than the limit of " +
                         std::to_string(std::max(shared_.limits.max_body_bytes, kMaxPlainBody)) + " bytes\n"),
          11, false);
    }
    if (ec) {
      spdlog::debug("HTTP_READ_FAILED reason=\"{}\"", ec.message());
      if (counted_upload_) --shared_.uploads;
      counted_upload_ = false;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
      return;
    }
    const auto& request = parser_->get();
    const unsigned version = request.version();
    const bool keep_alive = request.keep_alive();
    head_ = request.method() == http::verb::head;
    const std::string target(request.target());
    HttpRequest req{request.method() == http::verb::post,
                    target.substr(0, target.find('?')),
                    std::string(request[http::field::content_type]),
                    {}};
    if (!req.post && request.method() != http::verb::get && !head_) {
      respond(plain(405, "only GET, HEAD and POST\n"), version, keep_alive);
    } else if (!req.post) {
      respond(handle(shared_.handler, req), version, keep_alive);
    } else if (!counted_upload_) {  // a POST without a body
      respond(plain(shared_.limits.max_body_bytes == 0 ? 405 : 400, shared_.limits.max_body_bytes == 0
                                                                        ? "uploads are off (http.try_page = false)\n"
                                                                        : "the upload is empty\n"),
              version, keep_alive);
    } else {
      req.body = std::move(parser_->get().body());
      asio::post(shared_.upload_thread,
                 [self = shared_from_this(), req = std::move(req), version, keep_alive]() mutable {
                   HttpResponse answer = handle(self->shared_.handler, req);
                   auto& executor = self->stream_;
                   asio::post(executor.get_executor(), [self = std::move(self), answer = std::move(answer), version,
                                                        keep_alive] { self->respond(answer, version, keep_alive); });
                 });
    }
  }

  // A handler that throws answers 500 instead of taking the endpoint's thread (and the node) down.
  static HttpResponse handle(const HttpHandler& handler, const HttpRequest& req) {
    try {
      return handler(req);
    } catch (const std::exception& err) {
      spdlog::error("HTTP_HANDLER_FAILED path={} reason=\"{}\"", req.path, err.what());
      return plain(500, "internal error; the node's log says why\n");
    }
  }

  void respond(const HttpResponse& answer, unsigned version, bool keep_alive) {
    if (counted_upload_) --shared_.uploads;
    counted_upload_ = false;
    response_ = {};
    response_.version(version);
    response_.keep_alive(keep_alive);
    response_.set(http::field::server, "nephrad");
    response_.set(http::field::cache_control, "no-store");
    response_.result(static_cast<unsigned>(answer.status));
    if (answer.status == 405) response_.set(http::field::allow, "GET, HEAD, POST");
    response_.set(http::field::content_type, answer.content_type);
    response_.body() = answer.body;
    response_.prepare_payload();
    if (head_) response_.body().clear();
    stream_.expires_after(kRequestTimeout);  // a client that stops reading is cut too
    http::async_write(stream_, response_, [self = shared_from_this()](beast::error_code wec, size_t) {
      if (wec || !self->response_.keep_alive()) {
        self->stream_.socket().shutdown(tcp::socket::shutdown_both, wec);
        return;
      }
      self->read();
    });
  }
};

}  // namespace

struct HttpEndpoint::Impl {
  Shared shared;  // before io: sessions still queued in io end after it is destroyed
  asio::io_context io;
  tcp::acceptor acceptor{io};
  asio::steady_timer backoff{io};
  std::thread thread;

  void accept() {
    acceptor.async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) {  // out of descriptors: wait instead of spinning on the same error
        spdlog::warn("HTTP_ACCEPT_FAILED reason=\"{}\"", ec.message());
        backoff.expires_after(kAcceptBackoff);
        backoff.async_wait([this](beast::error_code wec) {
          if (!wec) accept();
        });
        return;
      }
      if (shared.sessions.load() >= kMaxSessions) {
        beast::error_code ignored;
        socket.close(ignored);  // over the cap: closed at once
      } else {
        std::make_shared<Session>(std::move(socket), shared)->read();
      }
      accept();
    });
  }
};

HttpEndpoint::HttpEndpoint(HttpHandler handler) : impl_(std::make_unique<Impl>()) {
  impl_->shared.handler = std::move(handler);
}

HttpEndpoint::~HttpEndpoint() { stop(); }

void HttpEndpoint::start(const std::string& bind, int port, HttpLimits limits) {
  impl_->shared.limits = limits;
  const tcp::endpoint endpoint(asio::ip::make_address(bind), static_cast<unsigned short>(port));
  beast::error_code ec;
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(endpoint, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error("cannot serve HTTP on " + bind + ":" + std::to_string(port) + ": " + ec.message());
  }
  impl_->accept();
  impl_->thread = std::thread([this] { impl_->io.run(); });
  spdlog::info("HTTP_LISTENING bind={} port={} paths=/,/status.json,/healthz,/metrics{}", bind, port,
               limits.max_body_bytes > 0 ? ",/try" : "");
}

void HttpEndpoint::stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->io.stop();
  impl_->thread.join();
  impl_->shared.upload_thread.join();
}

}  // namespace nephra::app
