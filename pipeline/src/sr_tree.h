#pragma once
// A thin layer over DSRDocumentTree: every call adds one content item as the last child of a given node and
// returns its id, and every DCMTK refusal (a relationship the IOD forbids, a bad value) becomes a ResultError.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmsr/dsrdoctr.h>

#include <cstddef>
#include <string>
#include <vector>

#include "nephra/engine/slice.h"

namespace nephra::pipeline::detail {

class SrTree {
 public:
  using Rel = DSRTypes::E_RelationshipType;
  explicit SrTree(DSRDocumentTree& tree) : tree_(tree) {}

  size_t root(const DSRCodedEntryValue& title, const char* template_id);
  size_t container(size_t parent, Rel rel, const DSRCodedEntryValue& name);
  size_t text(size_t parent, Rel rel, const DSRCodedEntryValue& name, const std::string& value);
  size_t code(size_t parent, Rel rel, const DSRCodedEntryValue& name, const DSRCodedEntryValue& value);
  size_t uidref(size_t parent, Rel rel, const DSRCodedEntryValue& name, const std::string& uid);
  size_t num(size_t parent, Rel rel, const DSRCodedEntryValue& name, const std::string& value,
             const DSRCodedEntryValue& unit);
  // A closed polyline on an image, in its pixel coordinates (the image goes below it, SELECTED FROM).
  size_t polyline(size_t parent, Rel rel, const DSRCodedEntryValue& name, const std::vector<cv::Point2f>& points);
  // Image library entries have no concept name; pass nullptr.
  size_t image(size_t parent, Rel rel, const DSRCodedEntryValue* name, const engine::SliceSource& source);

 private:
  DSRContentItem& add(size_t parent, Rel rel, DSRTypes::E_ValueType type, const DSRCodedEntryValue* name);
  DSRDocumentTree& tree_;
};

}  // namespace nephra::pipeline::detail
