// Predictions and summaries; see results.h.
#include "worker/eval/results.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "worker/eval/tsv.h"

namespace dcvlr::eval {
namespace {

namespace fs = std::filesystem;

std::string Fixed4(double v) {
  char buf[32];
  snprintf(buf, sizeof(buf), "%.4f", v);
  return buf;
}

nlohmann::json TallyJson(const Tally& t) {
  return {
      {"total_samples", t.total}, {"hits", t.hits}, {"accuracy", t.accuracy()}};
}

}  // namespace

BenchmarkScore ScoreRows(const std::string& name, const std::string& path,
                         bool has_category, std::vector<PredictionRow>* rows) {
  BenchmarkScore s;
  s.name = name;
  s.path = path;
  for (const char* stage : {"exact", "boxed", "phrase", "option", "number"})
    s.stages[stage] = 0;
  for (PredictionRow& r : *rows) {
    r.score = ScorePrediction(r.prediction, r.answer, r.options);
    s.overall.total++;
    if (r.score.hit) {
      s.overall.hits++;
      s.stages[r.score.stage]++;
    }
    if (has_category) {
      Tally& c = s.categories[r.category];
      c.total++;
      if (r.score.hit) c.hits++;
    }
  }
  return s;
}

bool WriteFileAtomically(const std::string& path, const std::string& content,
                         std::string* error) {
  fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) fs::create_directories(p.parent_path(), ec);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out.flush()) {
      *error = tmp + ": write failed";
      return false;
    }
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    *error = path + ": " + ec.message();
    return false;
  }
  return true;
}

std::string DumpJson(const nlohmann::json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

bool WritePredictions(const std::string& dir, const std::string& name,
                      const std::vector<char>& option_columns,
                      bool has_category, const std::vector<PredictionRow>& rows,
                      std::string* error) {
  std::vector<std::string> header = {"index", "question"};
  for (char l : option_columns) header.push_back(std::string(1, l));
  header.push_back("answer");
  header.push_back("prediction");
  if (has_category) header.push_back("category");
  std::string tsv = TsvLine(header);
  nlohmann::json list = nlohmann::json::array();
  for (const PredictionRow& r : rows) {
    std::vector<std::string> f = {r.index, r.question};
    nlohmann::json opts = nlohmann::json::object();
    for (char l : option_columns) {
      auto it = r.options.find(l);
      f.push_back(it == r.options.end() ? "" : it->second);
      if (it != r.options.end()) opts[std::string(1, l)] = it->second;
    }
    f.push_back(r.answer);
    f.push_back(r.prediction);
    if (has_category) f.push_back(r.category);
    tsv += TsvLine(f);
    nlohmann::json o = {{"index", r.index},
                        {"question", r.question},
                        {"options", opts},
                        {"answer", r.answer},
                        {"prediction", r.prediction},
                        {"hit", r.score.hit},
                        {"match_stage", r.score.stage},
                        {"extracted", r.score.extracted}};
    if (has_category) o["category"] = r.category;
    list.push_back(o);
  }
  const std::string base = (fs::path(dir) / name).string();
  return WriteFileAtomically(base + "_predictions.tsv", tsv, error) &&
         WriteFileAtomically(base + "_predictions.json",
                             DumpJson(list, 1) + "\n", error);
}

bool ReadPredictionsTsv(const std::string& path,
                        std::vector<PredictionRow>* rows, bool* has_category,
                        std::string* error) {
  TsvTable t;
  if (!ReadTsvFile(path, &t, error)) return false;
  for (const char* required : {"index", "answer", "prediction"})
    if (t.Column(required) < 0) {
      *error = path + ":1: missing required column \"" + required + "\"";
      return false;
    }
  const int ci = t.Column("index"), ca = t.Column("answer"),
            cp = t.Column("prediction"), cq = t.Column("question"),
            cc = t.Column("category");
  *has_category = cc >= 0;
  rows->clear();
  for (const auto& f : t.rows) {
    PredictionRow r;
    r.index = f[ci];
    r.answer = f[ca];
    r.prediction = f[cp];
    if (cq >= 0) r.question = f[cq];
    if (cc >= 0) r.category = f[cc];
    for (char l = 'A'; l <= 'Z'; ++l) {
      int c = t.Column(std::string(1, l));
      if (c >= 0 && !f[c].empty() && f[c] != "nan" && f[c] != "NaN")
        r.options[l] = f[c];
    }
    rows->push_back(std::move(r));
  }
  return true;
}

Tally Overall(const std::vector<BenchmarkScore>& scores) {
  Tally t;
  for (const BenchmarkScore& s : scores) {
    t.total += s.overall.total;
    t.hits += s.overall.hits;
  }
  return t;
}

nlohmann::json SummaryJson(const std::vector<BenchmarkScore>& scores) {
  nlohmann::json results = nlohmann::json::object();
  for (const BenchmarkScore& s : scores) {
    nlohmann::json b = TallyJson(s.overall);
    nlohmann::json cats = nlohmann::json::object();
    for (const auto& [name, t] : s.categories) cats[name] = TallyJson(t);
    b["categories"] = cats;
    b["stage_breakdown"] = s.stages;
    b["file_path"] = s.path;
    results[s.name] = b;
  }
  const Tally all = Overall(scores);
  return {{"benchmark_results", results},
          {"overall_statistics",
           {{"total_benchmarks", scores.size()},
            {"total_samples", all.total},
            {"total_hits", all.hits},
            {"overall_accuracy", all.accuracy()}}}};
}

bool AppendMetrics(const std::string& path,
                   const std::vector<BenchmarkScore>& scores,
                   std::string* error) {
  fs::path p(path);
  std::error_code ec;
  if (p.has_parent_path()) fs::create_directories(p.parent_path(), ec);
  std::ofstream out(path, std::ios::app);
  for (const BenchmarkScore& s : scores)
    out << nlohmann::json{{"eval_accuracy/" + s.name, s.overall.accuracy()},
                          {"eval_hits/" + s.name, s.overall.hits},
                          {"eval_total/" + s.name, s.overall.total}}
               .dump()
        << '\n';
  out << nlohmann::json{{"eval_accuracy", Overall(scores).accuracy()}}.dump()
      << '\n';
  if (!out.flush()) {
    *error = path + ": cannot append metrics";
    return false;
  }
  return true;
}

std::string BenchmarkReport(const BenchmarkScore& s) {
  std::string out;
  for (const auto& [name, t] : s.categories)
    out += "category " + s.name + "/" + (name.empty() ? "(none)" : name) +
           " samples=" + std::to_string(t.total) +
           " hits=" + std::to_string(t.hits) +
           " accuracy=" + Fixed4(t.accuracy()) + "\n";
  out += "benchmark " + s.name + " samples=" + std::to_string(s.overall.total) +
         " hits=" + std::to_string(s.overall.hits) +
         " accuracy=" + Fixed4(s.overall.accuracy()) + "\n";
  return out;
}

}  // namespace dcvlr::eval
