// tests/docs/docs_test.cc
//
// Issue 21, part 7: what a newcomer reads agrees with the binaries.
//
//  - docs/reference.md names every flag that a binary's --help prints, in
//    that binary's section ("## sluice-stage"), and every flag an op adds to
//    `sluice-stage --op NAME --help`, in that op's section ("### Op `NAME`");
//    every registered op has such a section.
//  - A flag that a table row of a binary's (or op's) section documents is one
//    that binary (or op) prints, and every other flag the page names is
//    printed by some --help: the page never documents a flag that is gone.
//  - Every relative link of README.md and docs/*.md leads to a file, and to a
//    heading of that file when it names one (#anchor, as GitHub makes them).
//
// Failures list every offender at once, with the file and line for links.
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/harness/process.h"

namespace sluice::testing {
namespace {

namespace fs = std::filesystem;
using FlagSet = std::set<std::string>;

const std::vector<std::string> kBinaries = {"sluice-producer", "sluice-stage",
                                            "sluice-sink", "sluice-keygen"};

std::string SourcePath(const std::string& relative) {
  return std::string(SLUICE_SOURCE_DIR) + "/" + relative;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string Joined(const FlagSet& flags) {
  std::string out;
  for (const std::string& f : flags) out += (out.empty() ? "" : " ") + f;
  return out;
}

// Runs `binary args...` and returns its stdout; a failure if it does not
// exit 0 within 10 s.
std::string Run(const std::string& binary, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {BinaryPath(binary)};
  argv.insert(argv.end(), args.begin(), args.end());
  Process process(argv, std::nullopt, {},
                  [](const std::string& message) { ADD_FAILURE() << message; });
  std::optional<int> code = process.Wait(std::chrono::seconds(10));
  std::string command = binary;
  for (const std::string& a : args) command += " " + a;
  EXPECT_EQ(code, 0) << command << ": " << process.err();
  return process.out();
}

// The flags of a --help text: its option lines, "  --name arg ..." or
// "  -h [ --help ]" (Boost.Program_options' layout, which keygen copies).
FlagSet HelpFlags(const std::string& help) {
  static const std::regex option(R"(^  (?:-\w \[ )?(--[a-z0-9][a-z0-9-]*))");
  FlagSet flags;
  for (const std::string& line : Lines(help)) {
    std::smatch m;
    if (std::regex_search(line, m, option)) flags.insert(m[1]);
  }
  return flags;
}

// The op names under "Registered ops" in sluice-stage --help.
std::vector<std::string> RegisteredOps(const std::string& stage_help) {
  static const std::regex entry(R"(^  ([a-z][a-z0-9_-]*)  +\S)");
  std::vector<std::string> ops;
  bool in_list = false;
  for (const std::string& line : Lines(stage_help)) {
    if (line.starts_with("Registered ops")) {
      in_list = true;
    } else if (in_list) {
      std::smatch m;
      if (!std::regex_search(line, m, entry)) break;
      ops.push_back(m[1]);
    }
  }
  return ops;
}

// Every --flag token of `text` (not inside a longer word).
FlagSet FlagTokens(const std::string& text) {
  static const std::regex token(R"((?:^|[^A-Za-z0-9_-])(--[a-z0-9](?:[a-z0-9-]*[a-z0-9])?))");
  FlagSet flags;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), token);
       it != std::sregex_iterator(); ++it) {
    flags.insert((*it)[1]);
  }
  return flags;
}

FlagSet Minus(const FlagSet& a, const FlagSet& b) {
  FlagSet out;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(),
                      std::inserter(out, out.end()));
  return out;
}

// What the binaries print: each binary's flags, and each op's own flags
// (what `--op NAME --help` adds to the stage's).
struct Helps {
  std::map<std::string, FlagSet> binary;
  std::map<std::string, FlagSet> op;
  FlagSet all;
};

const Helps& AllHelps() {
  static const Helps helps = [] {
    Helps h;
    for (const std::string& b : kBinaries) h.binary[b] = HelpFlags(Run(b, {"--help"}));
    const std::string stage_help = Run("sluice-stage", {"--help"});
    for (const std::string& op : RegisteredOps(stage_help)) {
      h.op[op] = Minus(HelpFlags(Run("sluice-stage", {"--op", op, "--help"})),
                       h.binary["sluice-stage"]);
    }
    for (const auto& [_, flags] : h.binary) h.all.insert(flags.begin(), flags.end());
    for (const auto& [_, flags] : h.op) h.all.insert(flags.begin(), flags.end());
    return h;
  }();
  return helps;
}

// docs/reference.md cut by headings: the text of each "## BINARY" section
// and of each "### Op `NAME`" section, and the flags of the first cell of
// each table row in them.
struct Reference {
  std::string text;
  std::map<std::string, std::string> binary_text, op_text;
  std::map<std::string, FlagSet> binary_rows, op_rows;
};

Reference ReadReference() {
  Reference ref;
  ref.text = ReadFile(SourcePath("docs/reference.md"));
  static const std::regex op_heading(R"(^### Op `([a-z0-9_-]+)`)");
  std::string binary, op;
  for (const std::string& line : Lines(ref.text)) {
    std::smatch m;
    if (line.starts_with("## ")) {
      binary = line.substr(3);
      op.clear();
    } else if (std::regex_search(line, m, op_heading)) {
      op = m[1];
    } else if (line.starts_with("### ")) {
      op.clear();
    }
    const bool is_binary =
        std::find(kBinaries.begin(), kBinaries.end(), binary) != kBinaries.end();
    if (!is_binary) continue;
    ref.binary_text[binary] += line + "\n";
    if (!op.empty()) ref.op_text[op] += line + "\n";
    if (line.starts_with("| `-")) {
      // The first cell ends at the first '|' that is not escaped.
      size_t end = 1;
      while ((end = line.find('|', end)) != std::string::npos && line[end - 1] == '\\') ++end;
      FlagSet cell = FlagTokens(line.substr(1, end == std::string::npos ? end : end - 1));
      FlagSet& rows = op.empty() ? ref.binary_rows[binary] : ref.op_rows[op];
      rows.insert(cell.begin(), cell.end());
    }
  }
  return ref;
}

TEST(Docs, ReferenceNamesEveryFlagOfEveryHelpInItsSection) {
  const Helps& helps = AllHelps();
  const Reference ref = ReadReference();
  ASSERT_FALSE(ref.text.empty()) << "no docs/reference.md";
  for (const auto& [binary, flags] : helps.binary) {
    EXPECT_FALSE(flags.empty()) << binary << " --help printed no flags";
    FlagSet missing = Minus(flags, FlagTokens(ref.binary_text.count(binary)
                                                  ? ref.binary_text.at(binary)
                                                  : ""));
    EXPECT_TRUE(missing.empty())
        << "docs/reference.md, section \"## " << binary << "\", lacks flags that "
        << binary << " --help prints: " << Joined(missing);
  }
  EXPECT_FALSE(helps.op.empty()) << "sluice-stage --help listed no registered ops";
  for (const auto& [op, flags] : helps.op) {
    if (!ref.op_text.count(op)) {
      ADD_FAILURE() << "docs/reference.md has no section \"### Op `" << op
                    << "`\" for the registered op " << op;
      continue;
    }
    FlagSet missing = Minus(flags, FlagTokens(ref.op_text.at(op)));
    EXPECT_TRUE(missing.empty())
        << "docs/reference.md, section \"### Op `" << op << "`\", lacks flags that "
        << "sluice-stage --op " << op << " --help adds: " << Joined(missing);
  }
}

TEST(Docs, ReferenceDocumentsNoFlagThatNoHelpPrints) {
  const Helps& helps = AllHelps();
  const Reference ref = ReadReference();
  for (const auto& [binary, rows] : ref.binary_rows) {
    FlagSet unknown = Minus(rows, helps.binary.at(binary));
    EXPECT_TRUE(unknown.empty())
        << "docs/reference.md documents, in the table of " << binary
        << ", flags that its --help does not print: " << Joined(unknown);
  }
  for (const auto& [op, rows] : ref.op_rows) {
    FlagSet unknown = Minus(rows, helps.op.count(op) ? helps.op.at(op) : FlagSet{});
    EXPECT_TRUE(unknown.empty())
        << "docs/reference.md documents, in the table of op " << op
        << ", flags that sluice-stage --op " << op << " --help does not add: "
        << Joined(unknown);
  }
  FlagSet unknown = Minus(FlagTokens(ref.text), helps.all);
  EXPECT_TRUE(unknown.empty())
      << "docs/reference.md names flags that no --help prints: " << Joined(unknown);
}

// GitHub's anchor for a heading: lower case; links reduced to their text;
// everything but letters, digits, spaces, '-' and '_' dropped (non-ASCII
// too: keep linked headings ASCII); spaces become '-'.
std::string Slug(std::string heading) {
  heading = std::regex_replace(heading, std::regex(R"(\[([^\]]*)\]\([^)]*\))"), "$1");
  std::string slug;
  for (char c : heading) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u >= 0x80) continue;
    if (std::isalnum(u) || c == '-' || c == '_') {
      slug += static_cast<char>(std::tolower(u));
    } else if (c == ' ') {
      slug += '-';
    }
  }
  return slug;
}

// The lines of a Markdown file outside fenced code blocks, with their
// numbers (from 1); fence lines themselves are left out.
std::vector<std::pair<int, std::string>> ProseLines(const std::string& text) {
  std::vector<std::pair<int, std::string>> out;
  bool fenced = false;
  int number = 0;
  for (const std::string& line : Lines(text)) {
    ++number;
    const size_t start = line.find_first_not_of(' ');
    if (start != std::string::npos && line.compare(start, 3, "```") == 0) {
      fenced = !fenced;
      continue;
    }
    if (!fenced) out.emplace_back(number, line);
  }
  return out;
}

std::set<std::string> Anchors(const std::string& markdown) {
  static const std::regex heading(R"(^#{1,6}\s+(.*?)\s*#*\s*$)");
  std::set<std::string> anchors;
  std::map<std::string, int> seen;
  for (const auto& [_, line] : ProseLines(markdown)) {
    std::smatch m;
    if (!std::regex_match(line, m, heading)) continue;
    const std::string slug = Slug(m[1]);
    const int n = seen[slug]++;
    anchors.insert(n == 0 ? slug : slug + "-" + std::to_string(n));
  }
  return anchors;
}

TEST(Docs, EveryRelativeLinkLeadsToAFileAndHeadingThatExist) {
  std::vector<fs::path> pages = {SourcePath("README.md")};
  for (const auto& entry : fs::directory_iterator(SourcePath("docs"))) {
    if (entry.path().extension() == ".md") pages.push_back(entry.path());
  }
  std::sort(pages.begin(), pages.end());
  static const std::regex code_span(R"(`[^`]*`)");
  static const std::regex link(R"(\]\(([^)\s]+)(?:\s+"[^"]*")?\))");
  static const std::regex scheme(R"(^[A-Za-z][A-Za-z0-9+.-]*:)");
  std::vector<std::string> broken;
  int checked = 0;
  for (const fs::path& page : pages) {
    const std::string name = fs::relative(page, SLUICE_SOURCE_DIR).string();
    for (const auto& [number, raw] : ProseLines(ReadFile(page.string()))) {
      const std::string line = std::regex_replace(raw, code_span, "``");
      for (auto it = std::sregex_iterator(line.begin(), line.end(), link);
           it != std::sregex_iterator(); ++it) {
        const std::string target = (*it)[1];
        if (std::regex_search(target, scheme)) continue;  // http:, mailto: ...
        ++checked;
        const size_t hash = target.find('#');
        const std::string path = target.substr(0, hash);
        const std::string anchor = hash == std::string::npos ? "" : target.substr(hash + 1);
        const fs::path file = path.empty() ? page : page.parent_path() / path;
        const std::string where = name + ":" + std::to_string(number) + ": " + target;
        if (!fs::exists(file)) {
          broken.push_back(where + " (no such file)");
        } else if (!anchor.empty() && file.extension() == ".md" &&
                   !Anchors(ReadFile(file.string())).count(anchor)) {
          broken.push_back(where + " (no such heading)");
        }
      }
    }
  }
  EXPECT_GT(checked, 10) << "found hardly any links: is the pattern right?";
  std::string list;
  for (const std::string& b : broken) list += "\n  " + b;
  EXPECT_TRUE(broken.empty()) << broken.size() << " broken links:" << list;
}

}  // namespace
}  // namespace sluice::testing
