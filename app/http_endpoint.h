#pragma once
// A small HTTP/1.1 server (Boost.Beast) on its own thread for operations: GET /healthz and GET /metrics.
#include <functional>
#include <memory>
#include <string>

namespace nephra::app {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Maps a request path (query string removed) to a response; runs on the endpoint's thread.
using HttpHandler = std::function<HttpResponse(const std::string& path)>;

class HttpEndpoint {
 public:
  HttpEndpoint(HttpHandler handler);
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;
  ~HttpEndpoint();

  // Binds (throws std::runtime_error naming the address if it cannot) and starts serving.
  void start(const std::string& bind, int port);
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nephra::app
