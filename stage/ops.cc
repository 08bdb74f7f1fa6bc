#include "stage/ops.h"

namespace sluice {

StatusOr<OpKind> ParseOpKind(std::string_view name) {
  if (name == "token") return OpKind::kToken;
  if (name == "result") return OpKind::kResult;
  if (name == "pass") return OpKind::kPass;
  return InvalidArgument("unknown op '" + std::string(name) +
                         "'; known ops: token, result, pass");
}

std::string_view OpName(OpKind kind) {
  switch (kind) {
    case OpKind::kToken:
      return "token";
    case OpKind::kResult:
      return "result";
    case OpKind::kPass:
      return "pass";
  }
  return "?";
}

OpDefaults DefaultsFor(OpKind kind) {
  switch (kind) {
    case OpKind::kToken:
      return {10, std::chrono::milliseconds(10)};
    case OpKind::kResult:
      return {5, std::chrono::milliseconds(5)};
    case OpKind::kPass:
      return {1, std::chrono::milliseconds(0)};
  }
  return {1, std::chrono::milliseconds(0)};
}

bool ApplyOp(OpKind kind, std::string& payload) {
  static constexpr std::string_view kToken = "token_";
  static constexpr std::string_view kResult = "result_";
  switch (kind) {
    case OpKind::kToken:
      payload.insert(0, kToken);
      return true;
    case OpKind::kResult:
      if (payload.starts_with(kToken)) {
        payload.replace(0, kToken.size(), kResult);
        return true;
      }
      payload.insert(0, kResult);
      return false;
    case OpKind::kPass:
      return true;
  }
  return true;
}

}  // namespace sluice
