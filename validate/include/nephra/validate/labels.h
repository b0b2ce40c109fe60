#pragma once
// The labels a site gives `nephra validate`: per study, which findings its radiologists reported, optionally on which
// slices. A CSV file (UTF-8, comma-separated, '#' starts a comment line):
//
//   study,Cyst,Stone,Tumor,slices
//   case-001,0,0,1,Tumor:40-46
//   case-002,0,0,0,
//
// `study` names a folder of the study's files (relative to the labels file, or absolute), or with --spool a Study
// Instance UID; one column per finding class of the model, 0 or 1; the optional `slices` column lists, per finding,
// the slice numbers (1-based, in the study's order along the patient axis) where the finding is, as ranges.
#include <filesystem>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace nephra::validate {

class LabelsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;  // "FILE:LINE: what is wrong"
};

struct SliceRange {
  int first = 0;
  int last = 0;
};

struct StudyLabel {
  std::string study;  // as written
  int line = 0;
  std::map<std::string, bool> present;                   // per finding class
  std::map<std::string, std::vector<SliceRange>> where;  // per finding, when the slices column gives it
  [[nodiscard]] bool normal() const;                     // no finding present
};

// `findings`: the model's finding classes (every class but Normal); each must have its column.
std::vector<StudyLabel> parse_labels(const std::string& text, const std::vector<std::string>& findings,
                                     const std::string& file_name);
std::vector<StudyLabel> read_labels(const std::filesystem::path& file, const std::vector<std::string>& findings);

}  // namespace nephra::validate
