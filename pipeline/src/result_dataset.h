#pragma once
// Helpers shared by the SR and SC writers (internal to nephra_pipeline).
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dctk.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "nephra/pipeline/results.h"

namespace nephra::pipeline::detail {

// The element's whole value ("a\b" when multi-valued); empty when absent.
std::string get_string(DcmItem& item, const DcmTagKey& tag);
void put(DcmItem& item, const DcmTagKey& tag, const std::string& value);
void put_code(DcmItem& item, const DcmTagKey& sequence, const char* value, const char* scheme, const char* meaning);

// Patient, study and character set attributes, copied byte for byte so names keep their encoding.
void copy_patient_study(DcmItem& source, DcmItem& target);

// Throws ResultError naming the first missing or invalid field (a result without its algorithm is useless).
void check_context(const ResultContext& ctx);

// General Equipment (the node) and Contributing Equipment (the algorithm, as IHE AI Results asks).
void put_equipment(DcmItem& target, const ResultContext& ctx);
std::string device_uid(const ResultContext& ctx);

// Text we add, in the data set's character set: UTF-8 stays under ISO_IR 192, anything else gets ASCII only.
std::string encode_text(std::string_view utf8, const std::string& charset);

std::string current_date();
std::string current_time();

// Writes Explicit VR Little Endian through a temporary file, so a crash never leaves a half result to send.
void save(DcmFileFormat& file, const std::filesystem::path& out);

}  // namespace nephra::pipeline::detail
