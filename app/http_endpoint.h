#pragma once
// A small HTTP/1.1 server (Boost.Beast) on its own thread for operations: the status page, /healthz, /metrics, and
// (when enabled) POST uploads for the try-a-slice page, handled one at a time on a second thread so that a slow
// classification never holds up /healthz.
#include <functional>
#include <memory>
#include <string>

namespace nephra::app {

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

struct HttpRequest {
  bool post = false;  // otherwise GET or HEAD
  std::string path;   // query string removed
  std::string content_type;
  std::string body;
};

// Maps a request to a response. GET and HEAD run on the endpoint's thread, POST on the upload thread.
using HttpHandler = std::function<HttpResponse(const HttpRequest& request)>;

struct HttpLimits {
  size_t max_body_bytes = 0;  // 0: POST is refused (405)
};

class HttpEndpoint {
 public:
  HttpEndpoint(HttpHandler handler);
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;
  ~HttpEndpoint();

  // Binds (throws std::runtime_error naming the address if it cannot) and starts serving.
  void start(const std::string& bind, int port, HttpLimits limits = {});
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nephra::app
