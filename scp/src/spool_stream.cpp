#include "spool_stream.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcvrae.h>
#include <dcmtk/dcmdata/dcvrobow.h>
#include <dcmtk/dcmdata/dcvrsh.h>
#include <dcmtk/dcmdata/dcvrui.h>
#include <dcmtk/dcmdata/dcvrul.h>
#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

namespace nephra::scp {

class CappedFileStream::Consumer : public DcmConsumer {
 public:
  Consumer(const std::filesystem::path& path, std::uintmax_t cap)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0640)), cap_(cap) {  // a slot exists already
    if (fd_ < 0) fail(errno);
  }
  Consumer(const Consumer&) = delete;
  Consumer& operator=(const Consumer&) = delete;
  ~Consumer() override {
    if (fd_ >= 0) ::close(fd_);
  }

  [[nodiscard]] OFBool good() const override { return status_.good() ? OFTrue : OFFalse; }
  [[nodiscard]] OFCondition status() const override { return status_; }
  [[nodiscard]] OFBool isFlushed() const override { return OFTrue; }
  [[nodiscard]] offile_off_t avail() const override {
    return status_.good() ? static_cast<offile_off_t>(cap_ - std::min(cap_, written_)) : 0;
  }

  offile_off_t write(const void* buf, offile_off_t buflen) override {
    if (status_.bad() || buflen <= 0) return 0;
    const auto len = static_cast<std::uintmax_t>(buflen);
    if (written_ + len > cap_) {
      over_ = true;
      written_ += len;  // what the sender has sent so far, for the log
      status_ = EC_StreamNotifyClient;
      return 0;
    }
    const auto* p = static_cast<const char*>(buf);
    written_ += len;
    // The meta header comes as dozens of writes of a few bytes: gathered, they cost one system call.
    if (len < kGatherBytes) {
      pending_.insert(pending_.end(), p, p + len);
      if (pending_.size() < kGatherBytes) return buflen;
      if (!write_pending()) return 0;
    } else if (!write_pending() || !write_all(p, len)) {
      return 0;
    }
    // Start writing back what has arrived while the rest is still on the wire, so that the sync before the
    // acknowledgement waits for the tail only (sync_file_range makes nothing durable: the sync still does).
    if (written_ - kicked_ >= kWritebackBytes) kick_writeback();
    return buflen;
  }

  void flush() override {}

  std::string finish() {
    if (status_.good() && write_pending() && written_ > kicked_) kick_writeback();
    return status_.good() ? "" : error_;
  }

  std::string sync() {
    if (status_.good()) write_pending();
    if (status_.bad()) return error_.empty() ? "not written" : error_;
    if (::fdatasync(fd_) != 0) return std::strerror(errno);  // the data and the size that reading them needs
    return "";
  }

  [[nodiscard]] bool over() const { return over_; }
  [[nodiscard]] std::uintmax_t written() const { return written_; }
  [[nodiscard]] const std::string& error() const { return error_; }

 private:
  bool write_all(const char* p, size_t left) {
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        fail(n < 0 ? errno : ENOSPC);
        return false;
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
    return true;
  }

  void kick_writeback() {
    ::sync_file_range(fd_, static_cast<off_t>(kicked_), static_cast<off_t>(written_ - kicked_), SYNC_FILE_RANGE_WRITE);
    kicked_ = written_;
  }

  bool write_pending() {
    const bool ok = write_all(pending_.data(), pending_.size());
    pending_.clear();
    return ok;
  }

  void fail(int err) {
    error_ = std::strerror(err);
    status_ = makeOFCondition(OFM_dcmdata, 18, OF_error, error_.c_str());
  }

  static constexpr std::uintmax_t kWritebackBytes = std::uintmax_t{256} * 1024U;
  static constexpr std::uintmax_t kGatherBytes = 4096;
  int fd_;
  std::uintmax_t cap_;
  std::uintmax_t written_ = 0;
  std::uintmax_t kicked_ = 0;
  bool over_ = false;
  std::string error_;
  std::vector<char> pending_;  // small writes not yet passed to the file
  OFCondition status_ = EC_Normal;
};

CappedFileStream::CappedFileStream(const std::filesystem::path& path, std::uintmax_t cap)
    : CappedFileStream(std::make_unique<Consumer>(path, cap)) {}

CappedFileStream::CappedFileStream(std::unique_ptr<Consumer> consumer)
    : DcmOutputStream(consumer.get()), consumer_(std::move(consumer)) {}

CappedFileStream::~CappedFileStream() = default;

bool CappedFileStream::over_cap() const { return consumer_->over(); }
std::uintmax_t CappedFileStream::written() const { return consumer_->written(); }
std::string CappedFileStream::error() const { return consumer_->over() ? "" : consumer_->error(); }
std::string CappedFileStream::finish() { return consumer_->finish(); }
std::string CappedFileStream::sync() { return consumer_->sync(); }

OFCondition write_meta_header(DcmOutputStream& out, const std::string& sop_class_uid,
                              const std::string& sop_instance_uid, const std::string& transfer_syntax_uid,
                              const std::string& source_ae) {
  DcmMetaInfo meta;
  const Uint8 version[2] = {0, 1};
  OFCondition cond = meta.putAndInsertUint32(DCM_FileMetaInformationGroupLength, 0);
  if (cond.good()) cond = meta.putAndInsertUint8Array(DCM_FileMetaInformationVersion, version, 2);
  if (cond.good()) cond = meta.putAndInsertString(DCM_MediaStorageSOPClassUID, sop_class_uid.c_str());
  if (cond.good()) cond = meta.putAndInsertString(DCM_MediaStorageSOPInstanceUID, sop_instance_uid.c_str());
  if (cond.good()) cond = meta.putAndInsertString(DCM_TransferSyntaxUID, transfer_syntax_uid.c_str());
  if (cond.good()) cond = meta.putAndInsertString(DCM_ImplementationClassUID, OFFIS_IMPLEMENTATION_CLASS_UID);
  if (cond.good()) {
    cond = meta.putAndInsertString(DCM_ImplementationVersionName, OFFIS_DTK_IMPLEMENTATION_VERSION_NAME);
  }
  if (cond.good()) cond = meta.putAndInsertString(DCM_SourceApplicationEntityTitle, source_ae.c_str());
  if (cond.good()) {
    cond = meta.computeGroupLengthAndPadding(EGL_withGL, EPD_noChange, META_HEADER_DEFAULT_TRANSFERSYNTAX,
                                             EET_UndefinedLength);
  }
  if (cond.bad()) return cond;
  meta.transferInit();
  cond = meta.write(out, META_HEADER_DEFAULT_TRANSFERSYNTAX, EET_ExplicitLength, nullptr);
  meta.transferEnd();
  return cond;
}

std::optional<std::uintmax_t> inflated_size(const std::filesystem::path& path, std::uintmax_t offset,
                                            std::uintmax_t cap) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  z_stream z{};
  if (inflateInit2(&z, -MAX_WBITS) != Z_OK) return std::nullopt;  // raw deflate, as Part 5 A.5 says
  std::vector<unsigned char> input(1U << 16U);
  std::vector<unsigned char> output(1U << 16U);
  std::uintmax_t total = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END && total <= cap) {
    in.read(reinterpret_cast<char*>(input.data()), static_cast<std::streamsize>(input.size()));
    z.next_in = input.data();
    z.avail_in = static_cast<uInt>(in.gcount());
    if (z.avail_in == 0) break;
    do {
      z.next_out = output.data();
      z.avail_out = static_cast<uInt>(output.size());
      rc = inflate(&z, Z_NO_FLUSH);
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
        inflateEnd(&z);
        return std::nullopt;
      }
      total += output.size() - z.avail_out;
    } while (z.avail_out == 0 && rc != Z_STREAM_END && total <= cap);
  }
  inflateEnd(&z);
  if (rc != Z_STREAM_END && total <= cap) return std::nullopt;  // cut short
  return total;
}

}  // namespace nephra::scp
