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

  void read() {
    parser_.emplace();
    parser_->body_limit(std::max<size_t>(shared_.limits.max_body_bytes, kMaxPlainBody));
    stream_.expires_after(kRequestTimeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

 private:
  static constexpr size_t kMaxPlainBody = size_t{8} * 1024;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> response_;
  Shared& shared_;
  bool head_ = false;
  bool counted_upload_ = false;

  void on_read(beast::error_code ec) {
    if (ec == http::error::body_limit && shared_.limits.max_body_bytes == 0) {
      respond(plain(405, "uploads are off (http.try_page = false)\n"), 11, false);
      return;
    }
    if (ec == http::error::body_limit) {
      respond(
          plain(413, "upload larger than the limit of " + std::to_string(shared_.limits.max_body_bytes) + " bytes\n"),
          11, false);
      return;
    }
    if (ec) {
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
      respond(shared_.handler(req), version, keep_alive);
    } else if (shared_.limits.max_body_bytes == 0) {
      respond(plain(405, "uploads are off (http.try_page = false)\n"), version, keep_alive);
    } else if (shared_.uploads.fetch_add(1) > 0) {
      --shared_.uploads;
      respond(plain(503, "another upload is being classified; try again in a moment\n"), version, keep_alive);
    } else {
      counted_upload_ = true;
      req.body = std::move(parser_->get().body());
      asio::post(shared_.upload_thread, [self = shared_from_this(), req = std::move(req), version, keep_alive] {
        HttpResponse answer = self->shared_.handler(req);
        asio::post(self->stream_.get_executor(), [self, answer = std::move(answer), version, keep_alive] {
          self->respond(answer, version, keep_alive);
        });
      });
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
