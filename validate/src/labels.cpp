#include "nephra/validate/labels.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

namespace nephra::validate {
namespace {

// One message from its parts, without a temporary string per '+'.
template <typename... Parts>
LabelsError error(const Parts&... parts) {
  std::string message;
  ((message += parts), ...);
  return LabelsError{message};
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

std::vector<std::string> split(const std::string& line, char sep) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, sep)) out.push_back(trim(cell));
  if (!line.empty() && line.back() == sep) out.emplace_back();
  return out;
}

int to_slice(const std::string& text, const std::string& where) {
  if (text.empty() || text.size() > 6 || !std::all_of(text.begin(), text.end(), ::isdigit) || std::stoi(text) < 1) {
    throw error(where, "slice numbers are whole numbers from 1, got '", text, "'");
  }
  return std::stoi(text);
}

// "Tumor:40-46 48;Cyst:12" → per finding, its ranges
std::map<std::string, std::vector<SliceRange>> parse_slices(const std::string& cell,
                                                            const std::vector<std::string>& findings,
                                                            const std::string& where) {
  std::map<std::string, std::vector<SliceRange>> out;
  for (const auto& part : split(cell, ';')) {
    if (part.empty()) continue;
    const auto colon = part.find(':');
    const std::string finding = trim(part.substr(0, colon));
    if (colon == std::string::npos || std::find(findings.begin(), findings.end(), finding) == findings.end()) {
      throw error(where, "slices: expected FINDING:RANGES (e.g. Tumor:40-46 48), got '", part, "'");
    }
    std::istringstream ranges(part.substr(colon + 1));
    for (std::string r; ranges >> r;) {
      const auto dash = r.find('-');
      const int first = to_slice(r.substr(0, dash), where);
      const int last = dash == std::string::npos ? first : to_slice(r.substr(dash + 1), where);
      if (last < first) throw error(where, "slices: range '", r, "' ends before it starts");
      out[finding].push_back({first, last});
    }
  }
  return out;
}

}  // namespace

bool StudyLabel::normal() const {
  return std::none_of(present.begin(), present.end(), [](const auto& p) { return p.second; });
}

std::vector<StudyLabel> parse_labels(const std::string& text, const std::vector<std::string>& findings,
                                     const std::string& file_name) {
  std::vector<StudyLabel> out;
  std::vector<std::string> header;
  std::set<std::string> seen;
  std::istringstream in(text);
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    const std::string where = file_name + ":" + std::to_string(number) + ": ";
    if (number == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // a spreadsheet's UTF-8 mark
    if (trim(line).empty() || trim(line)[0] == '#') continue;
    const auto cells = split(line, ',');
    if (header.empty()) {
      header = cells;
      if (header.empty() || header[0] != "study") throw error(where, "the header must start with 'study'");
      for (const auto& f : findings) {
        if (std::find(header.begin(), header.end(), f) == header.end()) {
          throw error(where, "the header has no column '", f, "' (one per finding: 0 or 1)");
        }
      }
      for (const auto& h : header) {
        if (h != "study" && h != "slices" && std::find(findings.begin(), findings.end(), h) == findings.end()) {
          throw error(where, "unknown column '", h, "' (expected study, the findings, slices)");
        }
      }
      continue;
    }
    if (cells.size() != header.size()) {
      throw error(where, "expected ", std::to_string(header.size()), " values, got ", std::to_string(cells.size()));
    }
    StudyLabel label;
    label.line = number;
    for (size_t i = 0; i < header.size(); ++i) {
      const std::string& column = header[i];
      const std::string& value = cells[i];
      if (column == "study") {
        if (value.empty()) throw error(where, "the study is empty");
        if (!seen.insert(value).second) throw error(where, "study '", value, "' is listed twice");
        label.study = value;
      } else if (column == "slices") {
        label.where = parse_slices(value, findings, where);
      } else if (value == "0" || value == "1") {
        label.present[column] = value == "1";
      } else {
        throw error(where, "column ", column, ": expected 0 or 1, got '", value, "'");
      }
    }
    for (const auto& [finding, ranges] : label.where) {
      if (!label.present[finding]) {
        throw error(where, "slices are given for ", finding, ", which the row marks absent");
      }
    }
    out.push_back(std::move(label));
  }
  if (header.empty()) throw error(file_name, ": no header line (study,", findings.front(), ",...)");
  if (out.empty()) throw error(file_name, ": no study listed");
  return out;
}

std::vector<StudyLabel> read_labels(const std::filesystem::path& file, const std::vector<std::string>& findings) {
  std::ifstream in(file);
  if (!in) throw error(file.string(), ": cannot be read");
  std::stringstream text;
  text << in.rdbuf();
  return parse_labels(text.str(), findings, file.string());
}

}  // namespace nephra::validate
