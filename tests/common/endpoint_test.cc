#include "common/endpoint.h"

#include <gtest/gtest.h>

namespace sluice {
namespace {

TEST(Endpoint, AtPrefixBindsAndGreaterThanConnects) {
  auto bind = ParseEndpoints("@tcp://*:5557", Role::kConnect);
  ASSERT_TRUE(bind.ok()) << bind.status().message();
  EXPECT_EQ((*bind)[0].role, Role::kBind);
  EXPECT_EQ((*bind)[0].address, "tcp://*:5557");
  auto connect = ParseEndpoints(">tcp://hub:5558", Role::kBind);
  ASSERT_TRUE(connect.ok());
  EXPECT_EQ((*connect)[0].role, Role::kConnect);
  EXPECT_EQ((*connect)[0].address, "tcp://hub:5558");
}

TEST(Endpoint, BareEndpointTakesTheRoleDefault) {
  auto as_bind = ParseEndpoints("tcp://*:5557", Role::kBind);
  ASSERT_TRUE(as_bind.ok());
  EXPECT_EQ((*as_bind)[0].role, Role::kBind);
  auto as_connect = ParseEndpoints("tcp://localhost:5557", Role::kConnect);
  ASSERT_TRUE(as_connect.ok());
  EXPECT_EQ((*as_connect)[0].role, Role::kConnect);
}

TEST(Endpoint, CommaSeparatedListKeepsEachPrefix) {
  auto list = ParseEndpoints("@tcp://127.0.0.1:*,>tcp://a:1,ipc:///tmp/x",
                             Role::kConnect);
  ASSERT_TRUE(list.ok()) << list.status().message();
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].role, Role::kBind);
  EXPECT_EQ((*list)[1].role, Role::kConnect);
  EXPECT_EQ((*list)[2].role, Role::kConnect);
  EXPECT_EQ((*list)[2].address, "ipc:///tmp/x");
  EXPECT_EQ((*list)[1].ToString(), ">tcp://a:1");
}

TEST(Endpoint, MalformedEndpointsAreRejectedWithTheOffendingPart) {
  for (const char* bad :
       {"", "tcp://host", "tcp://host:0x", "tcp://host:70000", "tcp://:5",
        "udp://host:5", "host:5557", "@tcp://*:5557,", ",tcp://a:1",
        ">tcp://*:5557", ">tcp://host:*", "ipc://", "@", "tcp://256.1.1.1:5"}) {
    auto parsed = ParseEndpoints(bad, Role::kConnect);
    EXPECT_FALSE(parsed.ok()) << "accepted '" << bad << "'";
    if (!parsed.ok()) {
      EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
      // The message quotes the offending part (or the whole list for an
      // empty entry), so the user can find it.
      const std::string bad_text(bad);
      const std::string part = bad_text.substr(0, bad_text.find(','));
      if (!part.empty()) {
        EXPECT_NE(parsed.status().message().find("'" + part), std::string::npos)
            << parsed.status().message() << " does not name '" << part << "'";
      } else if (!bad_text.empty()) {
        EXPECT_NE(parsed.status().message().find(bad_text), std::string::npos)
            << parsed.status().message();
      }
    }
  }
}

// Issue 21: libzmq takes a host it cannot read as an address for a name
// to look up, so tcp://256.1.1.1:5 was accepted and failed only later, out
// of sight, at every reconnect.
TEST(Endpoint, HostThatLooksLikeAnAddressMustBeOne) {
  for (const char* bad :
       {"tcp://256.1.1.1:5", "@tcp://256.1.1.1:5", "tcp://1.2.3:5", "tcp://1.2.3.4.5:5",
        "tcp://1..2.3:5", "tcp://12345:5", "tcp://[::zz]:5", "tcp://[::1:5",
        "tcp://[]:5", ">tcp://bad host:5", ">tcp://a/b:5"}) {
    auto parsed = ParseEndpoints(bad, Role::kConnect);
    ASSERT_FALSE(parsed.ok()) << "accepted '" << bad << "'";
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument);
    std::string part(bad);
    if (part.front() == '@' || part.front() == '>') part.erase(0, 1);
    const std::string host = part.substr(6, part.rfind(':') - 6);
    EXPECT_NE(parsed.status().message().find("has host '" + host + "'"), std::string::npos)
        << parsed.status().message();
  }
}

TEST(Endpoint, AddressesNamesAndInterfacesThatAreWellFormedAreAccepted) {
  for (const char* good :
       {"tcp://10.0.0.255:5", "tcp://0.0.0.0:5", "tcp://[::1]:5", "@tcp://[fe80::1%eth0]:*",
        "tcp://sluice_hub-1.example.org:5", "tcp://localhost:5", "@tcp://eth0:5557",
        "@tcp://127.0.0.1:*"}) {
    auto parsed = ParseEndpoints(good, Role::kConnect);
    EXPECT_TRUE(parsed.ok()) << good << ": " << parsed.status().message();
  }
}

TEST(Endpoint, BindMayUseAnEphemeralPort) {
  auto parsed = ParseEndpoints("@tcp://127.0.0.1:*", Role::kConnect);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ((*parsed)[0].address, "tcp://127.0.0.1:*");
}

}  // namespace
}  // namespace sluice
