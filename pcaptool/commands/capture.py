"""`pcaptool capture`: live capture to a pcap/pcapng stream, configured like the sidecar."""

from __future__ import annotations

import os
import sys
from dataclasses import fields
from typing import Annotated

import typer

from pcaptool.commands._options import Quiet, Verbose, set_verbosity, snaplen_or_whole
from pcaptool.errors import PcapToolError, UsageError

_FILTER = "Filter builder (ignored when --filter is given, except the exclusions)"


Iface = Annotated[
    str,
    typer.Option(
        "--iface",
        "-i",
        envvar="PCAP_IFACE",
        help="Interface name prefix: every interface starting with it is captured "
        "(eth -> eth0, eth1); 'any' for libpcap's any device.",
    ),
]

Loopback = Annotated[
    bool,
    typer.Option("--loopback", help="Also capture loopback interfaces that match the prefix."),
]

Output = Annotated[
    str, typer.Option("--write", "-w", metavar="FILE", help="Output file; '-' is stdout.")
]

Fmt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-F",
        metavar="FORMAT",
        help="pcap or pcapng; default pcap for one interface, pcapng (one named "
        "interface block each) for several.",
    ),
]

Snaplen = Annotated[
    int,
    typer.Option(
        "--snaplen",
        "-s",
        envvar="PCAP_SNAPSHOT_LENGTH",
        help="Bytes kept of each packet (1-262144); 0: the whole packet, 262144 (tcpdump -s 0).",
    ),
]

Count = Annotated[int, typer.Option("--count", "-c", help="Stop after N packets; 0 = no limit.")]

Duration = Annotated[
    float,
    typer.Option(
        "--duration", envvar="PCAP_TIMEOUT_SECS", help="Stop after SECS seconds; 0 = no limit."
    ),
]

BufferSize = Annotated[
    int,
    typer.Option("--buffer-size", "-B", help="Kernel capture buffer, bytes; 0 = libpcap default."),
]

Promisc = Annotated[bool, typer.Option("--promisc/--no-promisc", help="Promiscuous mode.")]

RawFilter = Annotated[
    str | None,
    typer.Option(
        "--filter",
        "-f",
        metavar="EXPR",
        envvar="PCAP_FILTER",
        help="A BPF expression used as is (validated); DISABLED or empty: build one.",
    ),
]

L3Protos = Annotated[
    str,
    typer.Option(
        "--l3-protos",
        envvar="PCAP_L3_PROTOS",
        help="ipv4, ipv6 or ALL.",
        rich_help_panel=_FILTER,
    ),
]

L4Protos = Annotated[
    str,
    typer.Option(
        "--l4-protos",
        envvar="PCAP_L4_PROTOS",
        help="tcp, udp, icmp, icmp6 or ALL.",
        rich_help_panel=_FILTER,
    ),
]

Ipv4 = Annotated[
    str,
    typer.Option(
        "--ipv4",
        envvar="PCAP_IPV4",
        help="IPv4 addresses/CIDR networks.",
        rich_help_panel=_FILTER,
    ),
]

Ipv6 = Annotated[
    str,
    typer.Option(
        "--ipv6",
        envvar="PCAP_IPV6",
        help="IPv6 addresses/CIDR networks.",
        rich_help_panel=_FILTER,
    ),
]

Hosts = Annotated[
    str,
    typer.Option(
        "--hosts",
        envvar="PCAP_HOSTS",
        help="Host names, resolved to A and AAAA at start.",
        rich_help_panel=_FILTER,
    ),
]

Ports = Annotated[
    str,
    typer.Option(
        "--ports",
        envvar="PCAP_PORTS",
        help="Ports 1-65535 or ranges LOW-HIGH.",
        rich_help_panel=_FILTER,
    ),
]

TcpFlags = Annotated[
    str,
    typer.Option(
        "--tcp-flags",
        envvar="PCAP_TCP_FLAGS",
        help="fin, syn, rst, psh, ack, urg, ece, cwr: any of them set.",
        rich_help_panel=_FILTER,
    ),
]

ExcludeHosts = Annotated[
    str | None,
    typer.Option(
        "--exclude-hosts",
        envvar="PCAP_EXCLUDE_HOSTS",
        rich_help_panel=_FILTER,
        help="Host names whose traffic is left out.",
    ),
]

ExcludePorts = Annotated[
    str | None,
    typer.Option(
        "--exclude-ports",
        envvar="PCAP_EXCLUDE_PORTS",
        rich_help_panel=_FILTER,
        help="Ports left out.",
    ),
]

ExcludeIpv4 = Annotated[
    str | None,
    typer.Option(
        "--exclude-ipv4",
        envvar="PCAP_EXCLUDE_IPV4",
        rich_help_panel=_FILTER,
        help="IPv4 addresses/networks left out.",
    ),
]

ExcludeIpv6 = Annotated[
    str | None,
    typer.Option(
        "--exclude-ipv6",
        envvar="PCAP_EXCLUDE_IPV6",
        rich_help_panel=_FILTER,
        help="IPv6 addresses/networks left out.",
    ),
]

SelfPorts = Annotated[
    str | None,
    typer.Option(
        "--self-ports",
        envvar="PCAP_SELF_PORTS",
        rich_help_panel=_FILTER,
        help="Local TCP ports pcaptool's own uploads use (LO-HI): always left out.",
    ),
]

HealthPort = Annotated[
    int | None,
    typer.Option(
        "--health-port",
        min=1,
        max=65535,
        rich_help_panel=_FILTER,
        help="The sidecar's health port (PCAP_HC_PORT): traffic whose local end it is "
        "(the probes) is left out.",
    ),
]

ResolveEvery = Annotated[
    float,
    typer.Option(
        "--resolve-every",
        envvar="PCAP_RESOLVE_EVERY",
        rich_help_panel=_FILTER,
        help="Re-resolve host names every SECS seconds and update the filter; 0 = once.",
    ),
]

PrintFilter = Annotated[
    bool, typer.Option("--print-filter", help="Print the filter expression and exit.")
]

ListInterfaces = Annotated[
    bool,
    typer.Option(
        "--list-interfaces",
        "-D",
        help="Print the interfaces --iface selects, one a line, and exit (as tcpdump -D).",
    ),
]

Compat = Annotated[
    bool,
    typer.Option(
        "--compat",
        envvar="PCAP_COMPAT",
        help="Cloud Run gen1: interface 'any', filter applied per packet in user space.",
    ),
]

Engine = Annotated[
    str,
    typer.Option(
        "--engine",
        envvar="PCAPTOOL_CAPTURE_ENGINE",
        hidden=True,
        help="auto (libpcap's C dump loop for one interface to pcap) or pcapy (always).",
    ),
]

ReadyFile = Annotated[
    str,
    typer.Option(
        "--ready-file",
        metavar="PATH",
        envvar="PCAP_READY_FILE",
        help="Created once capture runs, removed when it ends; '' for none.",
    ),
]


def capture(
    iface: Iface = "any",
    loopback: Loopback = False,
    output: Output = "-",
    fmt: Fmt = None,
    snaplen: Snaplen = 65536,
    count: Count = 0,
    duration: Duration = 0,
    buffer_size: BufferSize = 0,
    promisc: Promisc = True,
    raw_filter: RawFilter = None,
    l3_protos: L3Protos = "ipv4,ipv6",
    l4_protos: L4Protos = "tcp,udp",
    ipv4: Ipv4 = "DISABLED",
    ipv6: Ipv6 = "DISABLED",
    hosts: Hosts = "ALL",
    ports: Ports = "ALL",
    tcp_flags: TcpFlags = "ANY",
    exclude_hosts: ExcludeHosts = None,
    exclude_ports: ExcludePorts = None,
    exclude_ipv4: ExcludeIpv4 = None,
    exclude_ipv6: ExcludeIpv6 = None,
    self_ports: SelfPorts = None,
    health_port: HealthPort = None,
    resolve_every: ResolveEvery = 0,
    print_filter: PrintFilter = False,
    list_interfaces: ListInterfaces = False,
    compat: Compat = False,
    engine: Engine = "auto",
    ready_file: ReadyFile = "/tmp/pcaptool/ready",
    quiet: Quiet = False,
    verbose: Verbose = False,
) -> None:
    """Capture packets to a pcap/pcapng stream (stdout or -w FILE).

    Stops on --count, --duration, SIGTERM or SIGINT: the stream is flushed and
    closed, the exit code is 0 and one JSON line on stderr gives the packets
    received, dropped (kernel, interface) and written. Needs root or
    CAP_NET_RAW.

    Example:

    \b
        pcaptool capture -i eth --ports 443 --tcp-flags syn,rst -w syn.pcap
        pcaptool capture --print-filter --hosts example.com --exclude-ports 22
        pcaptool capture -i eth --duration 60 | pcaptool translate
    """
    set_verbosity(quiet, verbose)
    snaplen = snaplen_or_whole(snaplen)
    from pcaptool.sidecar import bpf
    from pcaptool.sidecar.capture import CaptureOptions, select_interfaces

    if list_interfaces:  # what the sidecar's translate names the capture's interfaces by
        print("\n".join(select_interfaces("any" if compat else iface, loopback)))
        return

    given = locals()  # the filter options are named as FilterSettings' fields
    settings = bpf.FilterSettings(**{f.name: given[f.name] for f in fields(bpf.FilterSettings)})
    builder, expression = _filter(settings, snaplen)
    if print_filter:
        print(expression)
        return
    opts = CaptureOptions(
        interfaces=select_interfaces("any" if compat else iface, loopback),
        snaplen=snaplen,
        count=count,
        duration=duration,
        buffer_size=buffer_size,
        promisc=promisc,
        fmt=fmt,
        compat=compat,
        ready_file=ready_file or None,
        resolve_every=resolve_every,
        engine=engine,
    )
    result = _run(opts, output, expression, builder.refresh)
    from pcaptool.log import log

    log("INFO", "capture finished", **result.as_log_fields())


def _filter(settings, snaplen: int):
    """The filter builder and the expression it builds, checked by libpcap."""
    from pcaptool.sidecar import bpf

    builder = bpf.FilterBuilder(settings)
    _warn_settings(builder, settings)
    expression = builder.build()
    bpf.compile_check(expression, snaplen=max(snaplen, 1))
    return builder, expression


def _warn_settings(builder, settings) -> None:
    """Say which settings a raw --filter makes moot, and when --self-ports hides the app's."""
    from pcaptool.log import log
    from pcaptool.sidecar.selfport import ephemeral_overlap

    if builder.raw_filter:
        s = settings
        ignored = {
            "PCAP_L3_PROTOS": s.l3_protos not in ("ipv4,ipv6", "", None),
            "PCAP_L4_PROTOS": s.l4_protos not in ("tcp,udp", "", None),
            "PCAP_IPV4": (s.ipv4 or "DISABLED").upper() != "DISABLED",
            "PCAP_IPV6": (s.ipv6 or "DISABLED").upper() != "DISABLED",
            "PCAP_HOSTS": (s.hosts or "ALL").upper() != "ALL",
            "PCAP_PORTS": (s.ports or "ALL").upper() != "ALL",
            "PCAP_TCP_FLAGS": (s.tcp_flags or "ANY").upper() != "ANY",
        }
        if any(ignored.values()):
            log(
                "WARNING",
                "--filter/PCAP_FILTER is set: the simple filter settings are ignored "
                "(the exclusions still apply)",
                ignored=[k for k, v in ignored.items() if v],
            )
    if builder.self_ports and (kernel := ephemeral_overlap(builder.self_ports)):
        log(
            "WARNING",
            "PCAP_SELF_PORTS overlaps the kernel's ephemeral port range: application "
            "connections from those ports are left out too",
            self_ports="{}-{}".format(*builder.self_ports),
            ip_local_port_range="{}-{}".format(*kernel),
        )


def _run(opts, output: str, expression: str, refresh):
    """The capture into stdout or the file `output`; a refused one leaves no empty file."""
    from pcaptool import fsmode
    from pcaptool.sidecar.capture import run_capture
    from pcaptool.stdio import refuse_terminal, silence_stdout

    if output in ("-", ""):
        refuse_terminal(sys.stdout, "a capture", instead="-w FILE")
        result = run_capture(opts, sys.stdout.buffer, expression, refresh)
        if result.reason == "output closed":
            # nothing more can reach the reader; keep the interpreter's last flush quiet
            silence_stdout()
        return result
    existed = os.path.exists(output)
    try:
        out = fsmode.create(output, exclusive=False)  # private; closed after the stats
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror}") from None
    try:
        return run_capture(opts, out, expression, refresh)
    except PcapToolError:
        out.close()
        # refused (no such interface, no permission): leave no empty file behind
        if not existed and os.path.getsize(output) == 0:
            os.unlink(output)
        raise
    finally:
        out.close()
