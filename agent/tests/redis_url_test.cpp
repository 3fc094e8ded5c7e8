// agent/redis/url.hpp: the Redis URL forms the agent accepts, and the ones it refuses.
#include "../redis/url.hpp"

#include <gtest/gtest.h>

using agent::redis::endpoint;
using agent::redis::parse_url;

TEST(RedisUrl, HostPortDb) {
    endpoint e;
    std::string err;
    ASSERT_TRUE(parse_url("redis://127.0.0.1:6380/2", e, err)) << err;
    EXPECT_EQ(e.host, "127.0.0.1");
    EXPECT_EQ(e.port, 6380);
    EXPECT_EQ(e.db, 2);
    EXPECT_TRUE(e.password.empty());
    EXPECT_EQ(e.describe(), "redis://127.0.0.1:6380/2");
}

TEST(RedisUrl, Defaults) {
    endpoint e;
    std::string err;
    ASSERT_TRUE(parse_url("redis://localhost", e, err)) << err;
    EXPECT_EQ(e.port, 6379);
    EXPECT_EQ(e.db, 0);
    ASSERT_TRUE(parse_url("redis://localhost/", e, err)) << err;
    EXPECT_EQ(e.db, 0);
}

TEST(RedisUrl, PasswordIsNeverShown) {
    endpoint e;
    std::string err;
    ASSERT_TRUE(parse_url("redis://:s3cr@t@h/1", e, err)) << err;
    EXPECT_EQ(e.password, "s3cr@t"); // the last '@' ends the credentials
    EXPECT_EQ(e.host, "h");
    ASSERT_TRUE(parse_url("redis://user:pw@h", e, err)) << err;
    EXPECT_EQ(e.password, "pw");
    EXPECT_EQ(e.describe().find("pw"), std::string::npos);
}

TEST(RedisUrl, Ipv6AndUnix) {
    endpoint e;
    std::string err;
    ASSERT_TRUE(parse_url("redis://[::1]:7000/3", e, err)) << err;
    EXPECT_EQ(e.host, "::1");
    EXPECT_EQ(e.port, 7000);
    EXPECT_EQ(e.db, 3);
    ASSERT_TRUE(parse_url("unix:///run/redis.sock?db=4", e, err)) << err;
    EXPECT_EQ(e.unix_path, "/run/redis.sock");
    EXPECT_EQ(e.db, 4);
    EXPECT_EQ(e.describe(), "unix:///run/redis.sock?db=4");
}

TEST(RedisUrl, Refused) {
    endpoint e;
    for (const char* bad : {"", "http://h", "redis://", "redis://h:0", "redis://h:65536",
                            "redis://h:x", "redis://h/x", "redis://h/-1", "redis://[::1",
                            "redis://[::1]x", "unix://relative", "unix:///s?db=x", "unix://"}) {
        std::string err;
        EXPECT_FALSE(parse_url(bad, e, err)) << bad;
        EXPECT_FALSE(err.empty()) << bad;
    }
}
