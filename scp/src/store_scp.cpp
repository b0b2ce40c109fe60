#include "store_scp.h"

#include "spool_stream.h"
#include "tls.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmnet/diutil.h>
#include <dcmtk/ofstd/ofstd.h>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netdb.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

namespace nephra::scp {
namespace {

constexpr Uint16 kOutOfResources = 0xA700;
constexpr Uint16 kDataSetMismatch = 0xA900;
constexpr Uint16 kCannotUnderstand = 0xC000;
// Element values longer than this stay on disk while the header is read (DCMTK loads them on demand).
constexpr Uint32 kLazyValueBytes = 4096;
constexpr double kMiB = 1024.0 * 1024.0;

bool valid_uid(const std::string& uid) {
  return !uid.empty() && uid.size() <= 64 &&
         std::all_of(uid.begin(), uid.end(), [](char c) { return c == '.' || (c >= '0' && c <= '9'); });
}

// Whether `host` (a name or an IPv4 address) resolves to `address`.
bool host_has_address(const std::string& host, const std::string& address) {
  if (host == address) return true;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0) return false;
  bool match = false;
  for (const addrinfo* a = found; a != nullptr && !match; a = a->ai_next) {
    char text[INET_ADDRSTRLEN] = {};
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ai_addr);
    match = ::inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) != nullptr && address == text;
  }
  ::freeaddrinfo(found);
  return match;
}

std::string get_string(DcmDataset& ds, const DcmTagKey& tag) {
  OFString value;
  ds.findAndGetOFStringArray(tag, value);
  return value.c_str();
}

// What the pixel data takes once decoded, from the header: a few MB of JPEG-LS or RLE can claim gigabytes.
double decoded_bytes(DcmDataset& ds) {
  Uint16 rows = 0;
  Uint16 cols = 0;
  Uint16 bits = 16;
  Uint16 samples = 1;
  Sint32 frames = 1;
  ds.findAndGetUint16(DCM_Rows, rows);
  ds.findAndGetUint16(DCM_Columns, cols);
  ds.findAndGetUint16(DCM_BitsAllocated, bits);
  ds.findAndGetUint16(DCM_SamplesPerPixel, samples);
  if (ds.findAndGetSint32(DCM_NumberOfFrames, frames).bad() || frames < 1) frames = 1;
  return static_cast<double>(rows) * cols * std::max<Uint16>(samples, 1) * frames * std::max(bits / 8, 1);
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

}  // namespace

OFCondition add_storage_contexts(DcmSCPConfig& config) {
  const OFList<OFString> verification{UID_LittleEndianImplicitTransferSyntax, UID_LittleEndianExplicitTransferSyntax};
  OFCondition cond = config.addPresentationContext(UID_VerificationSOPClass, verification);
  // Accepted as sent; decoding is the engine's job. JPEG 2000 is left out on purpose: DCMTK cannot decode
  // it, so a PACS that can transcode will fall back to one of these.
  // Lossless compressed first: a sender proposing one is sending that data, and re-encoding costs both sides.
  // Lossy syntaxes come last so that we never ask for lossy compression of lossless data.
  const OFList<OFString> syntaxes{UID_JPEGLSLosslessTransferSyntax,
                                  UID_JPEGProcess14SV1TransferSyntax,
                                  UID_JPEGProcess14TransferSyntax,
                                  UID_RLELosslessTransferSyntax,
                                  UID_LittleEndianExplicitTransferSyntax,
                                  UID_LittleEndianImplicitTransferSyntax,
                                  UID_DeflatedExplicitVRLittleEndianTransferSyntax,
                                  UID_JPEGLSLossyTransferSyntax,
                                  UID_JPEGProcess1TransferSyntax,
                                  UID_JPEGProcess2_4TransferSyntax};
  for (const char* sop : {UID_CTImageStorage, UID_EnhancedCTImageStorage}) {
    if (cond.good()) cond = config.addPresentationContext(sop, syntaxes);
  }
  return cond;
}

StoreScp::StoreScp(std::shared_ptr<const config::Config> cfg, store::RoundStore& spool, InstanceSink& sink,
                   ScpStats& stats)
    : cfg_(std::move(cfg)), spool_(spool), sink_(sink), stats_(stats) {}

OFBool StoreScp::checkCalledAETitleAccepted(const OFString& calledAE) {
  const bool ok = trim(calledAE.c_str()) == cfg_->node.ae_title;
  if (!ok) stats_.associations_rejected_called_ae.inc();
  if (!ok) spdlog::warn("SCP_ASSOC_REJECTED reason=called_ae_not_recognised called_ae=\"{}\"", calledAE.c_str());
  return ok ? OFTrue : OFFalse;
}

OFBool StoreScp::checkCallingAETitleAccepted(const OFString& callingAE) {
  const config::Peer* peer = cfg_->find_peer(trim(callingAE.c_str()));
  if (peer == nullptr) {
    stats_.associations_rejected_calling_ae.inc();
    spdlog::warn("SCP_ASSOC_REJECTED reason=calling_ae_not_recognised calling_ae=\"{}\" peer={}", callingAE.c_str(),
                 getPeerIP().c_str());
    return OFFalse;
  }
  // An AE title is a name anyone can claim; the address it calls from is harder to fake.
  if (cfg_->node.check_peer_address && !host_has_address(peer->host, getPeerIP().c_str())) {
    stats_.associations_rejected_address.inc();
    spdlog::warn("SCP_ASSOC_REJECTED reason=calling_address_not_allowed calling_ae={} peer={} expected_host={}",
                 peer->ae_title, getPeerIP().c_str(), peer->host);
    return OFFalse;
  }
  // With it, a certificate from the hospital's authority is not enough: it must be the archive's own.
  if (cfg_->tls.enabled && cfg_->tls.bind_calling_ae && !certificate_names(assoc_, peer->certificate_name())) {
    stats_.associations_rejected_certificate.inc();
    spdlog::warn("SCP_ASSOC_REJECTED reason=certificate_does_not_name_peer calling_ae={} peer={} expected_name={}",
                 peer->ae_title, getPeerIP().c_str(), peer->certificate_name());
    return OFFalse;
  }
  return OFTrue;
}

void StoreScp::notifyAssociationAcknowledge() {
  stored_ = 0;
  acknowledged_ = true;
  stats_.associations_accepted.inc();
  spdlog::info("SCP_ASSOC_ACCEPTED calling_ae={} peer={}", getPeerAETitle().c_str(), getPeerIP().c_str());
}

void StoreScp::notifyAssociationTermination() {
  if (!acknowledged_) return;  // refused associations were already logged with their reason
  acknowledged_ = false;
  spdlog::info("SCP_ASSOC_CLOSED calling_ae={} stored={}", getPeerAETitle().c_str(), stored_);
}

void StoreScp::notifyAbortRequest() {
  spdlog::warn("SCP_ASSOC_ABORTED calling_ae={} stored={}", getPeerAETitle().c_str(), stored_);
}

OFCondition StoreScp::serve(T_ASC_Association* assoc) {
  assoc_ = assoc;
  return run(assoc);
}

OFCondition StoreScp::handleIncomingCommand(T_DIMSE_Message* incomingMsg, const DcmPresentationContextInfo& presInfo) {
  if (incomingMsg->CommandField != DIMSE_C_STORE_RQ) return DcmThreadSCP::handleIncomingCommand(incomingMsg, presInfo);
  return receive_store(incomingMsg->msg.CStoreRQ, presInfo);
}

// The data set goes into a spool file as it arrives, capped at node.max_instance_mb; nothing holds it whole in
// memory. Past the cap DCMTK drains the rest without keeping it, and the sender gets 0xA700.
OFCondition StoreScp::receive_store(T_DIMSE_C_StoreRQ& req, const DcmPresentationContextInfo& presInfo) {
  const std::string calling_ae = trim(getPeerAETitle().c_str());
  OFString abstract_syntax;
  OFString transfer_syntax;
  findPresentationContext(presInfo.presentationContextID, abstract_syntax, transfer_syntax);
  const auto cap = static_cast<std::uintmax_t>(cfg_->node.max_instance_mb * kMiB);
  std::filesystem::path tmp;
  store::Written written = store::Written::kSyncedSlot;
  try {
    tmp = spool_.take_slot();
  } catch (const std::exception& err) {
    spdlog::warn(R"(SPOOL_SLOT_UNAVAILABLE calling_ae={} reason="{}" note="receiving into a temporary file")",
                 calling_ae, err.what());
    tmp = spool_.new_tmp_path();
    written = store::Written::kSynced;
  }
  Uint16 status = 0;
  CappedFileStream file(tmp, cap + 4096);  // room for the meta header
  OFCondition cond =
      write_meta_header(file, req.AffectedSOPClassUID, req.AffectedSOPInstanceUID, transfer_syntax.c_str(), calling_ae);
  const std::uintmax_t data_set_offset = file.written();
  T_ASC_PresentationContextID pres_id = presInfo.presentationContextID;
  if (cond.good()) {
    cond = DIMSE_receiveDataSetInFile(assoc_, getDIMSEBlockingMode(), static_cast<int>(getDIMSETimeout()), &pres_id,
                                      &file, nullptr, nullptr);
  } else {
    cond = DIMSE_ignoreDataSet(assoc_, getDIMSEBlockingMode(), static_cast<int>(getDIMSETimeout()), nullptr, nullptr);
  }
  std::string write_error = file.error();
  // Writeback of the tail starts now and runs while the header is checked; the sync comes after the checks.
  if (!file.over_cap() && write_error.empty() && cond.good()) write_error = file.finish();
  if (file.over_cap()) {
    status = too_large(calling_ae, "size_mb", static_cast<double>(file.written()) / kMiB);
  } else if (!write_error.empty()) {
    stats_.rejected_spool_failure.inc();
    spdlog::error("SPOOL_WRITE_FAILED calling_ae={} status=0x{:04X} reason=\"{}\"", calling_ae, kOutOfResources,
                  write_error);
    status = kOutOfResources;
  }
  const bool drained = status != 0;  // refused while receiving: DCMTK read the rest of the data set
  if (cond.bad() && !(drained && cond.code() == DIMSEC_OUTOFRESOURCES)) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    // The data set never arrived whole: the association is broken; DCMTK ends it.
    stats_.rejected_unreadable.inc();
    spdlog::warn("CSTORE_FAILED reason=receive_failed calling_ae={} detail=\"{}\"", calling_ae, cond.text());
    return cond;
  }
  if (status == 0) {
    const auto started = std::chrono::steady_clock::now();
    status = ingest(req, {calling_ae, tmp, data_set_offset, transfer_syntax.c_str(), cap, written,
                          [&file] { return file.sync(); }});
    stats_.store_seconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }
  if (status != STATUS_Success) {  // a stored one stays in its slot until its study folder is synced
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
  }
  return sendSTOREResponse(presInfo.presentationContextID, req, status);
}

bool StoreScp::recover(const std::filesystem::path& slot) {
  DcmFileFormat whole;
  const OFCondition cond = whole.loadFile(slot.c_str());
  DcmMetaInfo& meta = *whole.getMetaInfo();
  OFString calling_ae;
  OFString transfer_syntax;
  OFString sop_class;
  OFString sop_instance;
  Uint32 meta_length = 0;
  meta.findAndGetOFString(DCM_SourceApplicationEntityTitle, calling_ae);
  meta.findAndGetOFString(DCM_TransferSyntaxUID, transfer_syntax);
  meta.findAndGetOFString(DCM_MediaStorageSOPClassUID, sop_class);
  meta.findAndGetOFString(DCM_MediaStorageSOPInstanceUID, sop_instance);
  meta.findAndGetUint32(DCM_FileMetaInformationGroupLength, meta_length);
  // What a crash cuts short ends before its pixel data do, or has no pixel data at all.
  if (cond.bad() || !whole.getDataset()->tagExists(DCM_PixelData) || sop_instance.empty()) {
    std::error_code ec;
    std::filesystem::remove(slot, ec);
    spdlog::warn(
        "SPOOL_SLOT_DISCARDED slot={} reason=not_a_whole_instance detail=\"{}\" "
        "note=\"cut short while being received: never acknowledged, the sender sends it again\"",
        slot.filename().string(), cond.bad() ? cond.text() : "no pixel data");
    return false;
  }
  T_DIMSE_C_StoreRQ req{};
  OFStandard::strlcpy(req.AffectedSOPClassUID, sop_class.c_str(), sizeof(req.AffectedSOPClassUID));
  OFStandard::strlcpy(req.AffectedSOPInstanceUID, sop_instance.c_str(), sizeof(req.AffectedSOPInstanceUID));
  constexpr std::uintmax_t kPreambleAndGroupLength = 128 + 4 + 12;  // preamble, "DICM", (0002,0000) UL
  const auto cap = static_cast<std::uintmax_t>(cfg_->node.max_instance_mb * kMiB);
  const Uint16 status = ingest(req, {trim(calling_ae.c_str()),
                                     slot,
                                     kPreambleAndGroupLength + meta_length,
                                     transfer_syntax.c_str(),
                                     cap,
                                     store::Written::kRecoveredSlot,
                                     {}});
  if (status == kOutOfResources) {  // it may have been acknowledged: kept for the next start, never dropped
    spdlog::error("SPOOL_SLOT_KEPT slot={} calling_ae={} status=0x{:04X} note=\"stored again at the next start\"",
                  slot.filename().string(), trim(calling_ae.c_str()), status);
    return false;
  }
  if (status != STATUS_Success) {  // refused as its receive would have refused it (the reason is logged above)
    std::error_code ec;
    std::filesystem::remove(slot, ec);
    spdlog::warn("SPOOL_SLOT_DISCARDED slot={} reason=refused calling_ae={} status=0x{:04X}", slot.filename().string(),
                 trim(calling_ae.c_str()), status);
    return false;
  }
  spdlog::info("SPOOL_SLOT_RECOVERED slot={} calling_ae={}", slot.filename().string(), trim(calling_ae.c_str()));
  return true;
}

Uint16 StoreScp::too_large(const std::string& calling_ae, const char* what, double size_mb) {
  stats_.rejected_too_large.inc();
  spdlog::warn("CSTORE_REFUSED reason=instance_too_large calling_ae={} status=0x{:04X} {}={:.1f} max_mb={}", calling_ae,
               kOutOfResources, what, size_mb, cfg_->node.max_instance_mb);
  return kOutOfResources;
}

// The checks that come before anything is written; nullopt when the instance may be stored.
std::optional<Uint16> StoreScp::refusal(const T_DIMSE_C_StoreRQ& req, const InstanceInfo& info, double size_mb) {
  if (size_mb > cfg_->node.max_instance_mb) return too_large(info.calling_ae, "size_mb", size_mb);
  if (info.sop_class_uid != req.AffectedSOPClassUID || info.sop_instance_uid != req.AffectedSOPInstanceUID) {
    stats_.rejected_uid_mismatch.inc();
    spdlog::warn("CSTORE_REFUSED reason=uid_mismatch calling_ae={} status=0x{:04X}", info.calling_ae, kDataSetMismatch);
    return kDataSetMismatch;
  }
  if (info.study_uid.empty() || info.series_uid.empty() || info.sop_instance_uid.empty()) {
    stats_.rejected_missing_uid.inc();
    spdlog::warn("CSTORE_REFUSED reason=missing_uid calling_ae={} status=0x{:04X}", info.calling_ae, kCannotUnderstand);
    return kCannotUnderstand;
  }
  // They end up in the results we send back: a malformed one would make every SR and SC invalid.
  if (!valid_uid(info.study_uid) || !valid_uid(info.series_uid) || !valid_uid(info.sop_instance_uid)) {
    stats_.rejected_invalid_uid.inc();
    spdlog::warn(R"(CSTORE_REFUSED reason=invalid_uid calling_ae={} status=0x{:04X} note="UIDs are digits and dots, )"
                 R"(at most 64 characters")",
                 info.calling_ae, kCannotUnderstand);
    return kCannotUnderstand;
  }
  const std::uintmax_t free_mb = spool_.free_mb();
  if (free_mb < static_cast<std::uintmax_t>(cfg_->node.min_free_spool_mb)) {
    stats_.rejected_spool_low.inc();
    spdlog::warn("CSTORE_REFUSED reason=spool_low_on_space calling_ae={} status=0x{:04X} free_mb={} min_free_mb={}",
                 info.calling_ae, kOutOfResources, free_mb, cfg_->node.min_free_spool_mb);
    return kOutOfResources;
  }
  return std::nullopt;
}

// Reads the spooled file's header (element values over 4 KB stay on disk) and stores it, or says why not.
Uint16 StoreScp::ingest(const T_DIMSE_C_StoreRQ& req, const Received& in) {
  const std::string& calling_ae = in.calling_ae;
  const std::filesystem::path& file = in.file;
  const std::uintmax_t cap = in.cap;
  std::uintmax_t size = std::filesystem::file_size(file) - in.data_set_offset;
  // DCMTK cannot leave the values of a deflated data set on disk: it parses only up to the pixel data, once
  // the whole stream has been inflated (counting, into a small buffer) and found whole and within the limit.
  const bool deflated = in.transfer_syntax_uid == UID_DeflatedExplicitVRLittleEndianTransferSyntax;
  std::optional<std::uintmax_t> inflated;
  if (deflated) {
    inflated = inflated_size(file, in.data_set_offset, cap);
    if (inflated && *inflated > cap) return too_large(calling_ae, "inflated_mb", static_cast<double>(*inflated) / kMiB);
    if (inflated) size = *inflated;
  }
  DcmFileFormat parsed;
  OFCondition cond = deflated && !inflated
                         ? makeOFCondition(OFM_dcmdata, 19, OF_error, "deflate stream is damaged")
                         : parsed.loadFileUntilTag(file.c_str(), EXS_Unknown, EGL_noChange, kLazyValueBytes,
                                                   ERM_fileOnly, deflated ? DCM_PixelData : DCM_UndefinedTagKey);
  if (cond.bad()) {
    stats_.rejected_unreadable.inc();
    spdlog::warn("CSTORE_REFUSED reason=unreadable_dataset calling_ae={} status=0x{:04X} detail=\"{}\"", calling_ae,
                 kCannotUnderstand, cond.text());
    return kCannotUnderstand;
  }
  DcmDataset& dataset = *parsed.getDataset();
  InstanceInfo info;
  info.calling_ae = calling_ae;
  info.sop_class_uid = get_string(dataset, DCM_SOPClassUID);
  info.sop_instance_uid = get_string(dataset, DCM_SOPInstanceUID);
  info.study_uid = get_string(dataset, DCM_StudyInstanceUID);
  info.series_uid = get_string(dataset, DCM_SeriesInstanceUID);
  info.transfer_syntax_uid = in.transfer_syntax_uid;
  if (const auto status = refusal(req, info, static_cast<double>(size) / kMiB)) return *status;
  if (const double decoded = decoded_bytes(dataset) / kMiB; decoded > cfg_->node.max_instance_mb) {
    return too_large(calling_ae, "decoded_mb", decoded);
  }
  return store_checked(info, in);
}

// Makes the checked instance durable and moves it into its study.
Uint16 StoreScp::store_checked(const InstanceInfo& info, const Received& in) {
  if (const std::string sync_error = in.sync ? in.sync() : ""; !sync_error.empty()) {  // durable before the ack
    stats_.rejected_spool_failure.inc();
    spdlog::error("SPOOL_WRITE_FAILED calling_ae={} status=0x{:04X} reason=\"{}\"", info.calling_ae, kOutOfResources,
                  sync_error);
    return kOutOfResources;
  }
  try {
    const StoreResult result =
        spool_.store_file(info, in.file, static_cast<size_t>(cfg_->study.max_instances), in.written);
    ++stored_;
    stats_.instances_stored.inc();
    sink_.on_stored(info, result);
    return STATUS_Success;
  } catch (const StudyFullError& err) {
    stats_.rejected_study_full.inc();
    spdlog::warn("CSTORE_REFUSED reason=study_instance_limit calling_ae={} status=0x{:04X} detail=\"{}\"",
                 info.calling_ae, kOutOfResources, err.what());
    return kOutOfResources;
  } catch (const std::exception& err) {
    stats_.rejected_spool_failure.inc();
    spdlog::error("SPOOL_WRITE_FAILED calling_ae={} status=0x{:04X} reason=\"{}\"", info.calling_ae, kOutOfResources,
                  err.what());
    return kOutOfResources;
  }
}

}  // namespace nephra::scp
