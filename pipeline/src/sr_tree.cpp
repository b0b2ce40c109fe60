#include "sr_tree.h"

#include "nephra/pipeline/results.h"

namespace nephra::pipeline::detail {
namespace {

void check(const OFCondition& cond, const char* what) {
  if (cond.bad()) throw ResultError(std::string("SR content: ") + what + ": " + cond.text());
}

std::string name_of(const DSRCodedEntryValue* name) {
  return name == nullptr ? std::string("(unnamed)") : std::string(name->getCodeMeaning().c_str());
}

}  // namespace

DSRContentItem& SrTree::add(size_t parent, Rel rel, DSRTypes::E_ValueType type, const DSRCodedEntryValue* name) {
  if (tree_.gotoRoot() == 0 || tree_.gotoNode(parent) != parent) {
    throw ResultError("SR content: no parent node for " + name_of(name));
  }
  if (tree_.addContentItem(rel, type, DSRTypes::AM_belowCurrent) == 0) {
    throw ResultError("SR content: the IOD does not allow " +
                      std::string(DSRTypes::relationshipTypeToReadableName(rel)) + " " +
                      DSRTypes::valueTypeToReadableName(type) + " \"" + name_of(name) + "\" here");
  }
  DSRContentItem& item = tree_.getCurrentContentItem();
  if (name != nullptr) check(item.setConceptName(*name), "concept name");
  return item;
}

size_t SrTree::root(const DSRCodedEntryValue& title, const char* template_id) {
  tree_.clear();
  if (tree_.addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container) == 0) {
    throw ResultError("SR content: cannot add the root container");
  }
  DSRContentItem& item = tree_.getCurrentContentItem();
  check(item.setConceptName(title), "document title");
  check(item.setContinuityOfContent(DSRTypes::COC_Separate), "continuity");
  check(tree_.setTemplateIdentification(template_id, "DCMR"), "template identification");
  return tree_.getNodeID();
}

size_t SrTree::container(size_t parent, Rel rel, const DSRCodedEntryValue& name) {
  check(add(parent, rel, DSRTypes::VT_Container, &name).setContinuityOfContent(DSRTypes::COC_Separate), "continuity");
  return tree_.getNodeID();
}

size_t SrTree::text(size_t parent, Rel rel, const DSRCodedEntryValue& name, const std::string& value) {
  // The value may be UTF-8 (ISO_IR 192) or Latin-1 bytes; DCMTK's VR check only knows ASCII.
  check(add(parent, rel, DSRTypes::VT_Text, &name).setStringValue(value, OFFalse), "text value");
  return tree_.getNodeID();
}

size_t SrTree::code(size_t parent, Rel rel, const DSRCodedEntryValue& name, const DSRCodedEntryValue& value) {
  check(add(parent, rel, DSRTypes::VT_Code, &name).setCodeValue(value), "code value");
  return tree_.getNodeID();
}

size_t SrTree::uidref(size_t parent, Rel rel, const DSRCodedEntryValue& name, const std::string& uid) {
  check(add(parent, rel, DSRTypes::VT_UIDRef, &name).setStringValue(uid), "UID value");
  return tree_.getNodeID();
}

size_t SrTree::num(size_t parent, Rel rel, const DSRCodedEntryValue& name, const std::string& value,
                   const DSRCodedEntryValue& unit) {
  check(add(parent, rel, DSRTypes::VT_Num, &name).setNumericValue(DSRNumericMeasurementValue(value, unit)),
        "numeric value");
  return tree_.getNodeID();
}

size_t SrTree::polyline(size_t parent, Rel rel, const DSRCodedEntryValue& name,
                        const std::vector<cv::Point2f>& points) {
  DSRSpatialCoordinatesValue value(DSRTypes::GT_Polyline);
  for (const auto& p : points) value.getGraphicDataList().addItem(p.x, p.y);
  check(add(parent, rel, DSRTypes::VT_SCoord, &name).setSpatialCoordinates(value), "spatial coordinates");
  return tree_.getNodeID();
}

size_t SrTree::image(size_t parent, Rel rel, const DSRCodedEntryValue* name, const engine::SliceSource& source) {
  DSRImageReferenceValue ref(source.sop_class_uid, source.sop_instance_uid);
  if (source.frame > 0) ref.getFrameList().addItem(static_cast<Sint32>(source.frame));
  check(add(parent, rel, DSRTypes::VT_Image, name).setImageReference(ref), "image reference");
  return tree_.getNodeID();
}

}  // namespace nephra::pipeline::detail
