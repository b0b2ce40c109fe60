// nephra: the command-line tool. `nephra classify` runs the engine on files or a study folder without a PACS;
// `nephra validate` measures the model on a site's labelled studies.
#include <dcmtk/oflog/oflog.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <optional>
#include <string>
#include <vector>

#include "nephra/engine/allocator.h"
#include "nephra/engine/classifier.h"
#include "nephra/engine/model.h"
#include "nephra/engine/study.h"
#include "nephra/validate/labels.h"
#include "nephra/validate/run.h"

namespace {
namespace fs = std::filesystem;
namespace ng = nephra::engine;

enum ExitCode : int { kOk = 0, kSomeFailed = 1, kUsage = 2, kModelError = 3, kLabelsError = 4 };

constexpr const char* kUsageText =
    R"(usage: nephra classify [options] FILE...     one JSON object per slice (per frame) on stdout
       nephra classify [options] --study DIR    the whole folder as one study, JSON on stdout
       nephra validate [options] --labels FILE --out DIR   measure the model on labelled studies
       nephra --version
options:
  --model FILE      model manifest (default: $NEPHRA_MODEL, ./models/nephra-kidney.json,
                    or the installed <prefix>/share/nephra/models/nephra-kidney.json)
  --heatmap DIR     also write each slice with its heatmap overlaid as PNG (study: the slices the node's
                    heatmap series shows, those in the runs of present findings)
  --class NAME      heatmap for this class instead of the predicted one (per-file mode)
  --inputs DIR      (study mode) also write each slice's network input, exactly as the engine made it, as
                    DIR/NNNN.png (NNNN = the slice number in the study's order): what training/adapt.py learns from
  --threads N       inference threads (default: all cores)
  --batch N         slices per network batch (default 8)
  --backend NAME    onednn (default) or opencv, the reference implementation
Files that cannot be read get {"file":..., "error":...}; the others go on; the exit status is then 1.
validate:
  --labels FILE     CSV: study,<one 0/1 column per finding>[,slices]; study = a folder of the study's files
                    (relative to FILE) or, with --spool, a Study Instance UID (README: "Validating on your studies")
  --out DIR         where report.html, report.json and the figures go
  --spool DIR       judge the results the node kept there (shadow mode) instead of classifying the folders
  --bootstrap N     resamples for the 95 % intervals (default 2000)
Exit status 4: the labels file is wrong (the message names the line).
)";

struct Options {
  bool validate = false;
  nephra::validate::ValidateOptions validation;
  std::vector<fs::path> files;
  std::optional<fs::path> study_dir;
  std::optional<fs::path> model;
  std::optional<fs::path> heatmap_dir;
  std::optional<fs::path> inputs_dir;
  std::string heatmap_class;
  ng::ClassifierOptions classifier;
};

std::optional<Options> parse(int argc, char** argv) {
  if (argc < 2 || (std::string(argv[1]) != "classify" && std::string(argv[1]) != "validate")) return std::nullopt;
  Options o;
  o.validate = std::string(argv[1]) == "validate";
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (o.validate && a == "--labels" && has_value) {
      o.validation.labels = argv[++i];
    } else if (o.validate && a == "--out" && has_value) {
      o.validation.out = argv[++i];
    } else if (o.validate && a == "--spool" && has_value) {
      o.validation.spool = fs::path(argv[++i]);
    } else if (o.validate && a == "--bootstrap" && has_value) {
      o.validation.bootstrap = std::max(0, std::atoi(argv[++i]));
    } else if (a == "--study" && has_value) {
      o.study_dir = argv[++i];
    } else if (a == "--model" && has_value) {
      o.model = argv[++i];
    } else if (a == "--inputs" && has_value) {
      o.inputs_dir = argv[++i];
    } else if (a == "--heatmap" && has_value) {
      o.heatmap_dir = argv[++i];
    } else if (a == "--class" && has_value) {
      o.heatmap_class = argv[++i];
    } else if (a == "--threads" && has_value) {
      o.classifier.threads = std::atoi(argv[++i]);
    } else if (a == "--batch" && has_value) {
      o.classifier.batch = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--backend" && has_value) {
      const std::string name = argv[++i];
      if (name != "onednn" && name != "opencv") return std::nullopt;
      o.classifier.backend = name == "opencv" ? ng::Backend::opencv : ng::Backend::onednn;
    } else if (a.rfind("--", 0) == 0) {
      return std::nullopt;
    } else {
      o.files.emplace_back(a);
    }
  }
  if (o.validate) {
    if (o.validation.labels.empty() || o.validation.out.empty() || !o.files.empty()) return std::nullopt;
    return o;
  }
  if (o.files.empty() == !o.study_dir.has_value()) return std::nullopt;
  return o;
}

fs::path find_model(const Options& o, const char* argv0) {
  if (o.model) return *o.model;
  if (const char* env = std::getenv("NEPHRA_MODEL"); env != nullptr && *env != '\0') return env;
  fs::path local = "models/nephra-kidney.json";
  if (fs::exists(local)) return local;
  std::error_code ec;
  const fs::path exe = fs::canonical(fs::path(argv0), ec);
  return exe.parent_path().parent_path() / "share/nephra/models/nephra-kidney.json";
}

void write_heatmap(const fs::path& dir, const ng::Slice& slice, const ng::SliceResult& result, int cls,
                   const std::string& name) {
  fs::create_directories(dir);
  const cv::Mat img = ng::overlay(slice, ng::heatmap(slice, result, cls));
  cv::imwrite((dir / (name + ".png")).string(), img);
}

std::string stem_of(const ng::SliceSource& s) {
  return fs::path(s.path).stem().string() + (s.frame > 0 ? "-f" + std::to_string(s.frame) : "");
}

int classify_files(const Options& o, ng::Classifier& clf) {
  const auto& model = clf.model();
  const int forced = o.heatmap_class.empty() ? -1 : model.class_index(o.heatmap_class);
  int status = kOk;
  for (const auto& file : o.files) {
    try {
      const auto slices = ng::load_slices(file, model);
      const auto results = clf.classify(slices);
      for (size_t i = 0; i < slices.size(); ++i) {
        std::cout << ng::slice_json(slices[i].source, results[i], model) << "\n";
        if (o.heatmap_dir && !results[i].cams.empty()) {  // no CAM: the slice never reached the network
          const int cls = forced >= 0 ? forced : results[i].predicted;
          write_heatmap(*o.heatmap_dir, slices[i], results[i], cls, stem_of(slices[i].source));
        }
      }
    } catch (const std::exception& err) {
      std::cout << nlohmann::json{{"file", file.string()}, {"error", err.what()}}.dump() << "\n";
      status = kSomeFailed;
    }
  }
  return status;
}

int classify_study(const Options& o, ng::Classifier& clf) {
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(*o.study_dir)) {
    if (e.is_regular_file()) files.push_back(e.path());
  }
  std::vector<ng::FileError> errors;
  const auto study = ng::classify_files(files, clf, errors);
  for (const auto& e : errors) std::cerr << "nephra: " << e.path << ": " << e.reason << "\n";
  std::cout << ng::study_json(study, clf.model()) << "\n";
  if (o.inputs_dir) {
    fs::create_directories(*o.inputs_dir);
    for (const auto& rec : study.slices) {
      char name[32];
      std::snprintf(name, sizeof name, "%04d.png", rec.number);
      try {
        cv::imwrite((*o.inputs_dir / name).string(), ng::reload_slice(rec.source, clf.model()).input);
      } catch (const ng::InputError& err) {
        errors.push_back({rec.source.path, err.what()});
      }
    }
  }
  if (o.heatmap_dir) {
    // the node's rule, without its cap: what the SC series would show
    for (const auto& h : ng::heatmap_slices(study, clf.model(), static_cast<int>(study.slices.size()))) {
      const auto& rec = study.slices[static_cast<size_t>(h.slice - 1)];
      try {
        write_heatmap(*o.heatmap_dir, ng::reload_slice(rec.source, clf.model()), rec.result, h.cls,
                      h.label + "-slice" + std::to_string(h.slice));
      } catch (const ng::InputError& err) {  // the file changed since it was classified
        std::cerr << "nephra: " << rec.source.path << ": " << err.what() << "\n";
        errors.push_back({rec.source.path, err.what()});
      }
    }
  }
  return errors.empty() ? kOk : kSomeFailed;
}

int validate(const Options& o, const fs::path& manifest, ng::Classifier& clf) {
  auto options = o.validation;
  options.manifest = manifest;
  try {
    const auto metrics = nephra::validate::run_validation(options, clf, std::cerr);
    std::cerr << "nephra: " << metrics.studies << " studies judged; report in "
              << (options.out / "report.html").string() << "\n";
    return kOk;
  } catch (const nephra::validate::LabelsError& err) {
    std::cerr << "nephra: " << err.what() << "\n";
    return kLabelsError;
  } catch (const std::exception& err) {
    std::cerr << "nephra: validate: " << err.what() << "\n";
    return kSomeFailed;
  }
}

}  // namespace

int main(int argc, char** argv) {
  nephra::engine::tune_allocator_for_images();
  if (argc == 2 && std::string(argv[1]) == "--version") {
    std::cout << "nephra " << NEPHRA_VERSION << "\n";
    return kOk;
  }
  const auto options = parse(argc, argv);
  if (!options) {
    std::cerr << kUsageText;
    return kUsage;
  }
  OFLog::configure(OFLogger::FATAL_LOG_LEVEL);  // each file's error is reported in its JSON line
  try {
    const fs::path manifest = find_model(*options, argv[0]);
    ng::Classifier clf(ng::load_model(manifest), options->classifier);
    if (options->validate) return validate(*options, manifest, clf);
    return options->study_dir ? classify_study(*options, clf) : classify_files(*options, clf);
  } catch (const ng::ModelError& err) {
    std::cerr << "nephra: " << err.what() << "\n";
    return kModelError;
  }
}
