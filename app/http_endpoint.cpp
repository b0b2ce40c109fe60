#include "http_endpoint.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
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

// One connection: read a request, answer, repeat while the client keeps it alive.
class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, const HttpHandler& handler, std::atomic<long>& live)
      : stream_(std::move(socket)), handler_(handler), live_(live) {
    ++live_;
  }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session() { --live_; }

  void read() {
    request_ = {};
    stream_.expires_after(kRequestTimeout);
    http::async_read(stream_, buffer_, request_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

 private:
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  const HttpHandler& handler_;
  std::atomic<long>& live_;

  void on_read(beast::error_code ec) {
    if (ec) {
      stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
      return;
    }
    response_ = {};
    response_.version(request_.version());
    response_.keep_alive(request_.keep_alive());
    response_.set(http::field::server, "nephrad");
    if (request_.method() != http::verb::get && request_.method() != http::verb::head) {
      response_.result(http::status::method_not_allowed);
      response_.set(http::field::allow, "GET, HEAD");
      response_.body() = "only GET and HEAD\n";
    } else {
      const std::string target(request_.target());
      const HttpResponse answer = handler_(target.substr(0, target.find('?')));
      response_.result(static_cast<unsigned>(answer.status));
      response_.set(http::field::content_type, answer.content_type);
      response_.body() = answer.body;
    }
    response_.prepare_payload();
    if (request_.method() == http::verb::head) response_.body().clear();
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
  HttpHandler handler;
  std::atomic<long> sessions{0};  // before io: sessions still queued in io end after it is destroyed
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
      if (sessions.load() >= kMaxSessions) {
        beast::error_code ignored;
        socket.close(ignored);  // over the cap: closed at once
      } else {
        std::make_shared<Session>(std::move(socket), handler, sessions)->read();
      }
      accept();
    });
  }
};

HttpEndpoint::HttpEndpoint(HttpHandler handler) : impl_(std::make_unique<Impl>()) {
  impl_->handler = std::move(handler);
}

HttpEndpoint::~HttpEndpoint() { stop(); }

void HttpEndpoint::start(const std::string& bind, int port) {
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
  spdlog::info("HTTP_LISTENING bind={} port={} paths=/healthz,/metrics", bind, port);
}

void HttpEndpoint::stop() {
  if (!impl_ || !impl_->thread.joinable()) return;
  impl_->io.stop();
  impl_->thread.join();
}

}  // namespace nephra::app
