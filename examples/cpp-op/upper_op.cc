// An op of your own: upper-cases each payload, and with --upper-suffix S
// appends S. Build it as examples/cpp-op/CMakeLists.txt shows, then run
//   my-stage --op upper --upper-suffix '!' --in ... --out ...
#include <cctype>

#include <sluice/op.h>

namespace po = boost::program_options;

class Upper : public sluice::ItemOp {
 public:
  explicit Upper(const sluice::OpContext& context)
      : suffix_((*context.flags)["upper-suffix"].as<std::string>()) {}

  sluice::Status Process(sluice::Item& item) override {
    if (item.payload.empty()) return sluice::Permanent("empty: nothing to upper-case");
    for (char& c : item.payload) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    item.payload += suffix_;
    return sluice::Status::Ok();
  }

 private:
  const std::string suffix_;  // Per-thread state: one instance per thread.
};

static sluice::RegisterOp upper({
    .name = "upper",
    .summary = "upper-cases each payload (an example op built out of tree)",
    .make_item = sluice::Make<Upper>,
    .flags = [](po::options_description& f) {
      f.add_options()("upper-suffix", po::value<std::string>()->default_value(""),
                      "appended to each result");
    },
});
