#include "nephra/scp/store_scu.h"

#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmnet/assoc.h>
#include <dcmtk/dcmnet/dimse.h>
#include <dcmtk/dcmnet/diutil.h>

#include <dcmtk/dcmnet/dul.h>

#include <memory>
#include <set>
#include <vector>

#include "tls.h"

namespace nephra::scp {
namespace {

constexpr Uint32 kMaxPdu = 65536;

struct Instance {
  std::filesystem::path path;
  std::string sop_class;
  std::string sop_instance;
  std::unique_ptr<DcmFileFormat> file;
};

struct Network {
  std::unique_ptr<DcmTLSTransportLayer> tls;  // destroyed after the network that uses it
  T_ASC_Network* net = nullptr;
  T_ASC_Parameters* params = nullptr;  // owned by assoc once requested
  T_ASC_Association* assoc = nullptr;
  ~Network() {
    if (assoc != nullptr) {
      ASC_destroyAssociation(&assoc);
    } else if (params != nullptr) {
      ASC_destroyAssociationParameters(&params);
    }
    if (net != nullptr) ASC_dropNetwork(&net);
  }
};

SendResult transient(std::string why) { return {SendOutcome::kTransient, std::move(why)}; }
SendResult permanent(std::string why) { return {SendOutcome::kPermanent, std::move(why)}; }

std::string status_hex(Uint16 status) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%04X", status);
  return buf;
}

bool load(Instance& inst) {
  inst.file = std::make_unique<DcmFileFormat>();
  if (inst.file->loadFile(inst.path.c_str()).bad()) return false;
  OFString cls;
  OFString uid;
  inst.file->getDataset()->findAndGetOFString(DCM_SOPClassUID, cls);
  inst.file->getDataset()->findAndGetOFString(DCM_SOPInstanceUID, uid);
  inst.sop_class = cls.c_str();
  inst.sop_instance = uid.c_str();
  return !inst.sop_class.empty() && !inst.sop_instance.empty();
}

SendResult associate(const StoreTarget& t, const std::set<std::string>& sop_classes, Network& n) {
  // TCP connect waits this long, not the kernel's two minutes (process-wide; every delivery sets the same value).
  dcmConnectionTimeout.set(t.timeout_seconds);
  if (OFCondition c = ASC_initializeNetwork(NET_REQUESTOR, 0, t.timeout_seconds, &n.net); c.bad()) {
    return transient(std::string("network init: ") + c.text());
  }
  if (t.tls != nullptr) {
    try {
      n.tls = make_tls_layer(NET_REQUESTOR, *t.tls);
    } catch (const std::exception& err) {
      return transient(err.what());  // a certificate file an operator can fix: keep the results
    }
    if (OFCondition c = ASC_setTransportLayer(n.net, n.tls.get(), 0); c.bad()) {
      return transient(std::string("TLS: ") + c.text());
    }
  }
  ASC_createAssociationParameters(&n.params, kMaxPdu);
  if (t.tls != nullptr) ASC_setTransportLayerType(n.params, OFTrue);
  ASC_setAPTitles(n.params, t.calling_ae.c_str(), t.called_ae.c_str(), nullptr);
  const std::string peer = t.host + ":" + std::to_string(t.port);
  ASC_setPresentationAddresses(n.params, "localhost", peer.c_str());
  const char* syntaxes[] = {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax};
  T_ASC_PresentationContextID id = 1;
  for (const auto& cls : sop_classes) {
    ASC_addPresentationContext(n.params, id, cls.c_str(), syntaxes, 2);
    id = static_cast<T_ASC_PresentationContextID>(id + 2);
  }
  const OFCondition c = ASC_requestAssociation(n.net, n.params, &n.assoc);
  if (c == DUL_ASSOCIATIONREJECTED) {
    T_ASC_RejectParameters rej{};
    ASC_getRejectParameters(n.params, &rej);
    OFString text;
    ASC_printRejectParameters(text, &rej);
    const std::string why = "association rejected: " + std::string(text.c_str());
    return rej.result == ASC_RESULT_REJECTEDPERMANENT ? permanent(why) : transient(why);
  }
  if (c.bad()) return transient("cannot associate with " + t.called_ae + "@" + peer + ": " + c.text());
  if (t.tls != nullptr && !certificate_names(n.assoc, t.tls_name)) {
    // A certificate from a trusted authority, but not the archive's (another node's, or our own): send nothing.
    ASC_abortAssociation(n.assoc);
    return transient("the TLS certificate at " + peer + " does not name " + t.tls_name + " (peers[].tls_name)");
  }
  return {};
}

SendResult store_one(T_ASC_Association* assoc, Instance& inst, Uint16 message_id, int timeout_seconds) {
  const T_ASC_PresentationContextID pc = ASC_findAcceptedPresentationContextID(assoc, inst.sop_class.c_str());
  if (pc == 0) return permanent("SOP class " + inst.sop_class + " not supported by the archive");
  T_DIMSE_C_StoreRQ req{};
  req.MessageID = message_id;
  OFStandard::strlcpy(req.AffectedSOPClassUID, inst.sop_class.c_str(), sizeof req.AffectedSOPClassUID);
  OFStandard::strlcpy(req.AffectedSOPInstanceUID, inst.sop_instance.c_str(), sizeof req.AffectedSOPInstanceUID);
  req.DataSetType = DIMSE_DATASET_PRESENT;
  req.Priority = DIMSE_PRIORITY_MEDIUM;
  T_DIMSE_C_StoreRSP rsp{};
  DcmDataset* detail = nullptr;
  const OFCondition c = DIMSE_storeUser(assoc, pc, &req, nullptr, inst.file->getDataset(), nullptr, nullptr,
                                        DIMSE_NONBLOCKING, timeout_seconds, &rsp, &detail, nullptr, 0);
  delete detail;
  if (c.bad()) return transient(std::string("C-STORE failed: ") + c.text());
  const Uint16 s = rsp.DimseStatus;
  switch (outcome_of_status(s)) {
    case SendOutcome::kDelivered:
      return {};
    case SendOutcome::kTransient:
      return transient("C-STORE status " + status_hex(s) + " (try again)");
    case SendOutcome::kPermanent:
      break;
  }
  return permanent("C-STORE status " + status_hex(s) + " (refused)");
}

}  // namespace

SendOutcome outcome_of_status(unsigned status) {
  if (status == STATUS_Success || (status & 0xF000U) == 0xB000U) return SendOutcome::kDelivered;
  if ((status & 0xFF00U) == 0xA700U || status == 0x0110U || status == 0x0213U || status == 0xFE00U) {
    return SendOutcome::kTransient;
  }
  return SendOutcome::kPermanent;
}

SendResult send_files(const StoreTarget& target, const std::vector<std::filesystem::path>& files,
                      const std::function<void(const std::filesystem::path&)>& on_ack,
                      const std::function<bool()>& keep_going) {
  std::vector<Instance> instances;
  std::set<std::string> classes;
  for (const auto& p : files) {
    Instance inst{p, "", "", nullptr};
    if (!load(inst)) return permanent("cannot read result file " + p.filename().string());
    classes.insert(inst.sop_class);
    instances.push_back(std::move(inst));
  }
  if (instances.empty()) return {};
  Network n;
  if (SendResult r = associate(target, classes, n); r.outcome != SendOutcome::kDelivered) return r;
  Uint16 message_id = 1;
  for (auto& inst : instances) {
    if (keep_going && !keep_going()) {
      ASC_releaseAssociation(n.assoc);
      return transient("interrupted: the node is stopping");
    }
    SendResult r = store_one(n.assoc, inst, message_id++, target.timeout_seconds);
    if (r.outcome != SendOutcome::kDelivered) {
      ASC_abortAssociation(n.assoc);
      return r;
    }
    inst.file.reset();
    on_ack(inst.path);
  }
  ASC_releaseAssociation(n.assoc);
  return {};
}

}  // namespace nephra::scp
