#include "result_dataset.h"

#include <array>
#include <system_error>

namespace nephra::pipeline::detail {
namespace {

void check(const OFCondition& cond, const std::string& what) {
  if (cond.bad()) throw ResultError(what + ": " + cond.text());
}

// Patient module, General Study and Patient Study modules. Type 2 attributes are written empty when the source
// lacks them; the others only when present.
struct CopiedTag {
  DcmTagKey tag;
  bool type2;
};
const std::array<CopiedTag, 19> kCopied{{
    {DCM_SpecificCharacterSet, false},
    {DCM_PatientName, true},
    {DCM_PatientID, true},
    {DCM_IssuerOfPatientID, false},
    {DCM_PatientBirthDate, true},
    {DCM_PatientSex, true},
    {DCM_PatientIdentityRemoved, false},
    {DCM_DeidentificationMethod, false},
    {DCM_DeidentificationMethodCodeSequence, false},
    {DCM_StudyInstanceUID, false},
    {DCM_StudyDate, true},
    {DCM_StudyTime, true},
    {DCM_ReferringPhysicianName, true},
    {DCM_StudyID, true},
    {DCM_AccessionNumber, true},
    {DCM_StudyDescription, false},
    {DCM_PatientAge, false},
    {DCM_PatientSize, false},
    {DCM_PatientWeight, false},
}};

}  // namespace

std::string get_string(DcmItem& item, const DcmTagKey& tag) {
  OFString value;
  if (item.findAndGetOFStringArray(tag, value).bad()) return {};
  return value.c_str();
}

void put(DcmItem& item, const DcmTagKey& tag, const std::string& value) {
  check(item.putAndInsertString(tag, value.c_str()), "cannot set " + DcmTag(tag).toString() + " to \"" + value + "\"");
}

void put_code(DcmItem& item, const DcmTagKey& sequence, const char* value, const char* scheme, const char* meaning) {
  DcmItem* code = nullptr;
  check(item.findOrCreateSequenceItem(sequence, code, -2), "cannot add to " + DcmTag(sequence).toString());
  put(*code, DCM_CodeValue, value);
  put(*code, DCM_CodingSchemeDesignator, scheme);
  put(*code, DCM_CodeMeaning, meaning);
}

void copy_patient_study(DcmItem& source, DcmItem& target) {
  if (get_string(source, DCM_StudyInstanceUID).empty()) throw ResultError("source slice has no StudyInstanceUID");
  for (const auto& [tag, type2] : kCopied) {
    DcmElement* element = nullptr;
    if (source.findAndGetElement(tag, element).good() && element != nullptr) {
      check(target.insert(dynamic_cast<DcmElement*>(element->clone()), true), "cannot copy " + DcmTag(tag).toString());
    } else if (type2) {
      check(target.insertEmptyElement(tag, true), "cannot set " + DcmTag(tag).toString());
    } else {
      delete target.remove(tag);
    }
  }
}

void check_context(const ResultContext& ctx) {
  if (!is_valid_uid(ctx.uid_root)) throw ResultError("uid_root \"" + ctx.uid_root + "\" is not a valid UID prefix");
  if (ctx.model_name.empty()) throw ResultError("result context has no model name");
  if (ctx.model_version.empty()) throw ResultError("result context has no model version");
  if (ctx.model_sha256.empty()) throw ResultError("result context has no model SHA-256");
}

std::string device_uid(const ResultContext& ctx) { return derive_uid(ctx.uid_root, {"device", ctx.model_sha256}); }

void put_equipment(DcmItem& target, const ResultContext& ctx) {
  const std::string charset = get_string(target, DCM_SpecificCharacterSet);
  put(target, DCM_Manufacturer, encode_text(ctx.manufacturer, charset));
  put(target, DCM_ManufacturerModelName, "nephrad");
  if (!ctx.software_version.empty()) put(target, DCM_SoftwareVersions, encode_text(ctx.software_version, charset));
  put(target, DCM_StationName, ctx.station_ae);

  DcmItem* algo = nullptr;
  check(target.findOrCreateSequenceItem(DCM_ContributingEquipmentSequence, algo, -2), "ContributingEquipmentSequence");
  put_code(*algo, DCM_PurposeOfReferenceCodeSequence, "Newcode1", "99IHE", "Processing Algorithm");
  put(*algo, DCM_Manufacturer, encode_text(ctx.manufacturer, charset));
  put(*algo, DCM_ManufacturerModelName, encode_text(ctx.model_name, charset));
  const std::string versions =
      ctx.software_version.empty() ? ctx.model_version : ctx.model_version + "\\" + ctx.software_version;
  put(*algo, DCM_SoftwareVersions, encode_text(versions, charset));
  put(*algo, DCM_DeviceUID, device_uid(ctx));
  put(*algo, DCM_ContributionDateTime, current_date() + current_time());
  put(*algo, DCM_ContributionDescription, "AI classification of kidney CT slices");
}

std::string encode_text(std::string_view utf8, const std::string& charset) {
  if (charset.find("ISO_IR 192") != std::string::npos) return std::string(utf8);
  std::string out;
  for (size_t i = 0; i < utf8.size(); ++i) {
    const auto byte = static_cast<unsigned char>(utf8[i]);
    if (byte < 0x80U) {
      out += utf8[i];
      continue;
    }
    // En and em dashes (U+2013, U+2014) are the only non-ASCII characters our own texts use.
    const bool dash =
        utf8.substr(i, 2) == "\xE2\x80" && i + 2 < utf8.size() && (utf8[i + 2] == '\x93' || utf8[i + 2] == '\x94');
    out += dash ? '-' : '?';
    while (i + 1 < utf8.size() && (static_cast<unsigned char>(utf8[i + 1]) & 0xC0U) == 0x80U) ++i;
  }
  return out;
}

std::string current_date() {
  OFString value;
  DcmDate::getCurrentDate(value);
  return value.c_str();
}

std::string current_time() {
  OFString value;
  DcmTime::getCurrentTime(value, true /* seconds */, false /* fraction */);
  return value.c_str();
}

void save(DcmFileFormat& file, const std::filesystem::path& out) {
  const std::filesystem::path part = out.string() + ".part";
  const OFCondition cond = file.saveFile(part.c_str(), EXS_LittleEndianExplicit);
  if (cond.bad()) {
    std::error_code ignored;
    std::filesystem::remove(part, ignored);
    throw ResultError("cannot write " + out.string() + ": " + cond.text());
  }
  std::error_code ec;
  std::filesystem::rename(part, out, ec);
  if (ec) throw ResultError("cannot rename " + part.string() + ": " + ec.message());
}

}  // namespace nephra::pipeline::detail
