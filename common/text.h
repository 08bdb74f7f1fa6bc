// common/text.h
//
// Bytes from the wire or a flag, made fit for JSON and log lines.
#ifndef SLUICE_COMMON_TEXT_H_
#define SLUICE_COMMON_TEXT_H_

#include <string>
#include <string_view>

namespace sluice {

// True if `s` is valid UTF-8.
bool ValidUtf8(std::string_view s);
// Standard base64 with padding.
std::string Base64(std::string_view in);
// True if `s` is valid UTF-8 without control characters.
bool PrintableText(std::string_view s);
// `s` itself if PrintableText, else "base64:" and its base64.
std::string Printable(std::string_view s);

}  // namespace sluice

#endif  // SLUICE_COMMON_TEXT_H_
