"""ft.Cluster and its parts: defaults, validation naming the field, the secret cookie."""

from __future__ import annotations

import random
import ssl

import pytest

from foundation_trio.cluster.options import (
    Channel,
    ChannelOptions,
    Cluster,
    ClusterTLS,
    format_address,
    parse_address,
)
from foundation_trio.runtime.errors import ConfigError


def test_defaults() -> None:
    options = Cluster(cookie="secret")
    assert options.listen == "127.0.0.1:0"
    assert options.seeds == ()
    assert options.tls is None
    assert options.chunk_size == 64 * 1024
    assert options.max_message_size >= 50 * 1024 * 1024
    assert options.channel(Channel.BULK).send_queue_size == 64
    assert options.channel(Channel.DATA) == ChannelOptions()


def test_seeds_given_as_a_list_become_a_tuple() -> None:
    options = Cluster(cookie="s", seeds=["127.0.0.1:7400", "[::1]:7401"])
    assert options.seeds == ("127.0.0.1:7400", "[::1]:7401")


def test_the_cookie_is_never_shown() -> None:
    options = Cluster(cookie="very-secret-cookie")
    assert "very-secret-cookie" not in repr(options)
    assert "very-secret-cookie" not in str(options)
    with pytest.raises(ConfigError) as info:
        Cluster(cookie="very-secret-cookie", listen="nonsense")
    assert "very-secret-cookie" not in str(info.value)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"cookie": ""}, "Cluster.cookie"),
        ({"cookie": b"bytes"}, "Cluster.cookie"),
        ({"cookie": "s", "listen": "localhost"}, "Cluster.listen"),
        ({"cookie": "s", "listen": "::1:80"}, "Cluster.listen"),
        ({"cookie": "s", "listen": "h:70000"}, "Cluster.listen"),
        ({"cookie": "s", "seeds": "127.0.0.1:1"}, "Cluster.seeds"),
        ({"cookie": "s", "seeds": ["127.0.0.1:0"]}, "Cluster.seeds[0]"),
        ({"cookie": "s", "seeds": ["ok:1", "bad"]}, "Cluster.seeds[1]"),
        ({"cookie": "s", "advertise": "h:0"}, "Cluster.advertise"),
        ({"cookie": "s", "handshake_timeout": 0}, "Cluster.handshake_timeout"),
        ({"cookie": "s", "handshake_timeout": float("inf")}, "Cluster.handshake_timeout"),
        ({"cookie": "s", "heartbeat_interval": -1}, "Cluster.heartbeat_interval"),
        ({"cookie": "s", "heartbeat_interval": True}, "Cluster.heartbeat_interval"),
        ({"cookie": "s", "peer_down_after": 0}, "Cluster.peer_down_after"),
        ({"cookie": "s", "max_handshakes": 0}, "Cluster.max_handshakes"),
        ({"cookie": "s", "peer_down_after": 2.5}, "Cluster.peer_down_after"),
        ({"cookie": "s", "reconnect_min": 2.0, "reconnect_max": 1.0}, "Cluster.reconnect_max"),
        ({"cookie": "s", "reconnect_jitter": 1.0}, "Cluster.reconnect_jitter"),
        ({"cookie": "s", "chunk_size": 100}, "Cluster.chunk_size"),
        ({"cookie": "s", "data": {"send_queue_size": 3}}, "Cluster.data"),
        (
            {"cookie": "s", "bulk": ChannelOptions(max_frame_size=2048)},
            "Cluster.bulk.max_frame_size",
        ),
        ({"cookie": "s", "max_message_size": 2048}, "Cluster.max_message_size"),
        ({"cookie": "s", "tls": ssl.create_default_context()}, "Cluster.tls"),
        ({"cookie": "s", "rng": 42}, "Cluster.rng"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Cluster(**options)  # type: ignore[arg-type]


def test_channel_options_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"ChannelOptions.send_queue_size"):
        ChannelOptions(send_queue_size=0)
    with pytest.raises(ConfigError, match=r"ChannelOptions.max_frame_size"):
        ChannelOptions(max_frame_size=10)


def test_from_mapping_is_strict() -> None:
    options = Cluster.from_mapping(
        {"cookie": "s", "seeds": ["127.0.0.1:7400"], "data": {"send_queue_size": 8}}
    )
    assert options.data.send_queue_size == 8
    assert options.seeds == ("127.0.0.1:7400",)
    with pytest.raises(ConfigError, match="unknown option 'cookies'"):
        Cluster.from_mapping({"cookie": "s", "cookies": "x"})
    with pytest.raises(ConfigError, match="heartbeat_interval"):
        Cluster.from_mapping({"cookie": "s", "heartbeat_interval": "1"})
    with pytest.raises(ConfigError, match="required option 'cookie'"):
        Cluster.from_mapping({})
    with pytest.raises(ConfigError, match="expected a mapping"):
        Cluster.from_mapping(["cookie"])  # type: ignore[arg-type]
    rng = random.Random(1)
    assert Cluster.from_mapping({"cookie": "s", "rng": rng}).rng is rng


def test_tls_contexts_must_have_the_right_purpose() -> None:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls = ClusterTLS(server=server, client=client)
    assert Cluster(cookie="s", tls=tls).tls is tls
    with pytest.raises(ConfigError, match=r"ClusterTLS.server"):
        ClusterTLS(server=client, client=client)
    with pytest.raises(ConfigError, match=r"ClusterTLS.client"):
        ClusterTLS(server=server, client=server)


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:0", ("::1", 0)),
        ("node-a:7400", ("node-a", 7400)),
    ],
)
def test_addresses_round_trip(address: str, parsed: tuple[str, int]) -> None:
    assert parse_address(address) == parsed
    assert format_address(*parsed) == address


@pytest.mark.parametrize("address", ["", ":80", "host:", "host:x", "[nothost]:1", 7400, None])
def test_bad_addresses(address: object) -> None:
    with pytest.raises(ConfigError, match="address"):
        parse_address(address)
