#pragma once
// A C-STORE data set goes into its spool file as its PDVs arrive (the bytes as sent), never whole in memory.
#include <dcmtk/dcmdata/dcostrma.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

namespace nephra::scp {

// An output stream into a new file (or an empty slot) that stops accepting bytes past `cap`: DCMTK's receive loop then
// drains the rest of the data set from the network without keeping it, so the sender still gets a status.
class CappedFileStream : public DcmOutputStream {
 public:
  CappedFileStream(const std::filesystem::path& path, std::uintmax_t cap);
  CappedFileStream(const CappedFileStream&) = delete;
  CappedFileStream& operator=(const CappedFileStream&) = delete;
  ~CappedFileStream() override;

  [[nodiscard]] bool over_cap() const;
  [[nodiscard]] std::uintmax_t written() const;
  // Why the file could not be written ("" when it could, or when only the cap stopped it).
  [[nodiscard]] std::string error() const;
  // Writes what is still gathered and starts writing back what is not yet on its way to the disk, without
  // waiting: "" or why the file could not be written.
  [[nodiscard]] std::string finish();
  // fdatasync through the descriptor that wrote the file: "" once its data are durable, or why not.
  [[nodiscard]] std::string sync();

 private:
  class Consumer;
  std::unique_ptr<Consumer> consumer_;
  CappedFileStream(std::unique_ptr<Consumer> consumer);
};

// The Part 10 header DCMTK's own file-streaming SCP writes: SOP class and instance from the request, the
// presentation context's transfer syntax, the caller's AE title.
OFCondition write_meta_header(DcmOutputStream& out, const std::string& sop_class_uid,
                              const std::string& sop_instance_uid, const std::string& transfer_syntax_uid,
                              const std::string& source_ae);

// Bytes the raw-deflated data set from `offset` in `path` inflates to, counting no further than `cap` + 1;
// nullopt when it is not valid deflate data or ends before the deflate stream does.
std::optional<std::uintmax_t> inflated_size(const std::filesystem::path& path, std::uintmax_t offset,
                                            std::uintmax_t cap);

}  // namespace nephra::scp
