"""What the commands share: how a command is declared, the connection and member
options, tokens from the environment, and the connection to the matcher.

Kept light on purpose: `blindmatch --help` imports this and every command module,
so nothing here imports gRPC, numpy or clkhash (the handlers do, when they run).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, overload

from blindmatch.client.errors import InputError

if TYPE_CHECKING:
    import grpc

    from blindmatch.client.remote.client import MatcherClient

DEFAULT_SERVER = "127.0.0.1:50051"
QUIET_HELP = "print only results and errors: no progress, notes or data-quality reports"

Handler = Callable[[argparse.Namespace], int]
Subcommands = argparse._SubParsersAction  # what `add_subparsers` returns


class Choices(Sequence[str]):
    """An option's choices, named where the library defines them and imported only when
    argparse looks at them: to check a value given, or for help's `%(choices)s`. Give the
    option a `metavar` too, or argparse formats (and so imports) them as it is declared."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _values(self) -> tuple[str, ...]:
        return tuple(getattr(importlib.import_module(self.module), self.name))

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[str]: ...
    def __getitem__(self, i: int | slice) -> str | Sequence[str]:
        return self._values()[i]

    def __len__(self) -> int:
        return len(self._values())

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())


LEVELS = Choices("blindmatch.client.remote.model", "LEVELS")
BLOCKINGS = Choices("blindmatch.client.remote.model", "BLOCKINGS")


def unit_interval(text: str) -> float:
    """A threshold option's value: a number above 0 and at most 1 (0 would mean 'the
    default' on the wire, so it is refused here rather than quietly replaced)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: not a number") from None
    if not 0.0 < value <= 1.0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text}: give a number above 0 and at most 1")
    return value


def non_negative(text: str) -> float:
    """A size option's value: a finite number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: not a number") from None
    if not 0.0 <= value < float("inf"):  # NaN too
        raise argparse.ArgumentTypeError(f"{text}: give a number of 0 or more")
    return value


def at_least(minimum: int, most: int | None = None) -> Callable[[str], int]:
    """An integer option's type: a whole number of at least `minimum` (and at most `most`, the
    largest its field on the wire holds)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text}: not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text}: give a whole number of at least {minimum}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"{text}: give a whole number of at most {most:,}")
        return value

    return parse


def date_format(text: str) -> str:
    """A date format option's value: a strptime format that can read a date."""
    from blindmatch.client.encoding.datetext import format_problem

    problem = format_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def command(
    sub: Subcommands,
    name: str,
    *,
    help: str,
    example: str | Sequence[str],
    handler: Handler | None = None,
    description: str | None = None,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """Declare a command (or a command group): its one-line `help`, a longer
    `description` if it needs one, and at least one example of its use."""
    examples = [example] if isinstance(example, str) else list(example)
    text = description or help[0].upper() + help[1:] + "."
    parser = sub.add_parser(
        name,
        help=help,
        description="\n\n".join(textwrap.fill(p, 78) for p in text.split("\n\n")),
        epilog="example"
        + ("s" if len(examples) > 1 else "")
        + ":\n"
        + "\n".join(f"  {e}" for e in examples),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )
    if handler is not None:
        parser.set_defaults(func=handler)
    return parser


def actions(parser: argparse.ArgumentParser, dest: str) -> Subcommands:
    """The sub-actions of a command group (`project create`, `project show`, ...)."""
    return parser.add_subparsers(dest=dest, required=True, metavar="ACTION")


def quiet_option(parser: argparse._ActionsContainer) -> None:
    """`-q`: the same words, and the same meaning, on every command that has it."""
    parser.add_argument("-q", "--quiet", action="store_true", help=QUIET_HELP)


def encoded_option(parser: argparse._ActionsContainer, *, required: bool = True) -> None:
    """`--encoded DIR`: the uploaded ENCODED folder a member's results and references read
    (not `required` where one form of the command reads none: `request --withdraw`)."""
    parser.add_argument(
        "--encoded",
        metavar="DIR",
        required=required,
        type=Path,
        help="the ENCODED folder that was uploaded",
    )


def listen_tls_options(parser: argparse._ActionsContainer, travels: str) -> None:
    """A server's TLS options (`serve`, `lookup-server`, `two-server role`): its certificate
    and key, the CA its clients' certificates must be signed by, and the flag that allows
    plaintext off loopback, whose help says what `travels` unencrypted then."""
    parser.add_argument("--tls-cert", metavar="FILE", help="server certificate (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="server private key (PEM)")
    parser.add_argument(
        "--client-ca",
        metavar="FILE",
        help="require client certificates signed by this CA (mutual TLS)",
    )
    parser.add_argument(
        "--insecure-listen-on-network",
        dest="insecure",
        action="store_true",
        help=f"allow plaintext on a non-loopback address ({travels} travel unencrypted)",
    )


def schema_secret_options(parser: argparse.ArgumentParser) -> None:
    """`--schema` and `--secret-file`, as `encode`, `query` and `watch` take them."""
    parser.add_argument(
        "--schema", metavar="FILE", required=True, type=Path, help="shared clkhash v3 schema (JSON)"
    )
    parser.add_argument(
        "--secret-file",
        metavar="FILE",
        required=True,
        type=Path,
        help="file holding the shared secret",
    )


def refuse_taken_port(listen: str, who: str, left: str = "") -> None:
    """Refuse `--listen`'s port where another process listens on it (matcher/rpc/listen.py
    `port_in_use`), before a server start makes anything (`serve`'s data dir, a role's audit
    log and key, a look-up server's lookup.key) and without gRPC's own error line: `who` is
    the server likely already running there, `left` what was left as it was."""
    from blindmatch.client.remote import tls
    from blindmatch.matcher.rpc.listen import port_in_use

    host, port = tls.listen_address(listen)
    if port_in_use(host, port):
        raise InputError(
            f"--listen {listen}: port {port} is taken (another process listens on "
            f"{tls.grpc_address(host, port)}: {who} already running?). Nothing was started"
            f"{f' and {left} was left as it was' if left else ''}; stop that process or choose "
            "another port"
        )


def checked_listen(
    args: argparse.Namespace, who: str
) -> tuple[grpc.ServerCredentials | None, str, int]:
    """A look-up server's or a two-server role's `--listen`, checked before its start makes
    anything: its TLS files (`listen_tls_options`), plaintext refused off loopback without
    `--insecure`, then the port where it is taken (`refuse_taken_port`, `who` as there; its
    `--data-dir`, where given, left as it was). The server credentials (None: plaintext), the
    host and the port."""
    from blindmatch.client.remote import tls

    credentials = tls.server_credentials(
        cert=args.tls_cert, key=args.tls_key, client_ca=args.client_ca
    )
    tls.check_listen_address(args.listen, secure=credentials is not None, allow=args.insecure)
    host, port = tls.listen_address(args.listen)
    left = f"--data-dir {args.data_dir}" if args.data_dir is not None else ""
    refuse_taken_port(args.listen, who, left)
    return credentials, host, port


def refuse_taken_since(exc: OSError, listen: str, who: str, left: str = "") -> None:
    """After a server start's bind failed (`exc`: matcher/rpc/listen.py `CannotListen`):
    where the port is taken now (another process took it after `refuse_taken_port`'s probe,
    or the old server on a restart was still letting it go), that refusal, in its words
    (benchmarks/ports.py `said_taken` reads them); `left`: as there, said only where true
    (the caller removed what the start made). Else nothing: the caller says `exc`."""
    from blindmatch.matcher.rpc.listen import CannotListen

    if isinstance(exc, CannotListen):
        refuse_taken_port(listen, who, left)


def outbound_credentials(
    targets: Sequence[tuple[str, str]],
    *,
    ca: str | None,
    cert: str | None,
    key: str | None,
    insecure: bool,
    flags: tuple[str, str, str, str],
    whom: str,
    why: str,
) -> grpc.ChannelCredentials | None:
    """How a server reaches other servers (`serve` its look-up servers, a two-server role
    the other parties): TLS when a CA or client certificate is given, else plaintext, which
    is refused to any of `targets` ((flag, HOST:PORT) pairs) off loopback unless `insecure`.
    `flags` names the CA, certificate, key and insecure options in the messages; `whom` and
    `why` say who would be reached in plaintext and what would travel."""
    from blindmatch.client.remote import tls

    ca_flag, cert_flag, key_flag, insecure_flag = flags
    if (cert is None) != (key is None):
        raise InputError(f"{cert_flag} and {key_flag} go together")
    credentials = None
    if ca or cert:
        credentials = tls.channel_credentials(
            ca_cert=ca, client_cert=cert, client_key=key, tls=True, flags=flags[:3]
        )
    for flag, address in targets:
        if "://" in address:
            raise InputError(f"{flag} {address}: HOST:PORT (TLS: {ca_flag})")
        if credentials is None and not insecure and not tls.is_loopback(address):
            raise InputError(
                f"{flag} {address}: refusing plaintext to {whom} ({why}); give {ca_flag} "
                f"(and {cert_flag}/{key_flag} for mutual TLS), or {insecure_flag}"
            )
    return credentials


def connection_options() -> argparse.ArgumentParser:
    """Where the matcher is and how to reach it (every command that talks to it)."""
    net = argparse.ArgumentParser(add_help=False)
    g = net.add_argument_group("connection")
    g.add_argument(
        "--server",
        metavar="HOST:PORT",
        default=env("BLINDMATCH_SERVER") or DEFAULT_SERVER,
        help="matcher HOST:PORT, or grpcs://HOST:PORT for TLS trusting the system's CAs "
        "(default: $BLINDMATCH_SERVER or %(default)s)",
    )
    g.add_argument(
        "--ca-cert",
        metavar="FILE",
        default=env("BLINDMATCH_CA_CERT"),
        help="CA to trust for TLS; without it (or grpcs://) only a loopback matcher is "
        "spoken to, in plaintext",
    )
    g.add_argument(
        "--client-cert",
        metavar="FILE",
        default=env("BLINDMATCH_CLIENT_CERT"),
        help="mutual TLS certificate",
    )
    g.add_argument(
        "--client-key", metavar="FILE", default=env("BLINDMATCH_CLIENT_KEY"), help="mutual TLS key"
    )
    g.add_argument(
        "--insecure",
        action="store_true",
        help="send the token and data unencrypted to a matcher that is not on loopback "
        "(a test network only)",
    )
    quiet_option(g)
    return net


TOKEN_HELP = (
    "member token; other users of this machine can see it in `ps`: prefer --token-file "
    "or $BLINDMATCH_TOKEN"
)
TOKEN_FILE_HELP = "file holding the member token (e.g. from `project create --tokens-dir`)"


def token_options(parser: argparse._ActionsContainer, *, token_help: str = TOKEN_HELP) -> None:
    """`--token` and `--token-file`, the same on every command that takes a member token."""
    parser.add_argument("--token", help=token_help)
    parser.add_argument("--token-file", metavar="FILE", help=TOKEN_FILE_HELP)


def member_options() -> argparse.ArgumentParser:
    """The project a member acts in, and its token."""
    member = argparse.ArgumentParser(add_help=False)
    member.add_argument("--project", required=True, help="project name")
    token_options(member)
    return member


def project_option(parser: argparse.ArgumentParser) -> None:
    """`--project NAME` for an operator command, with the old positional PROJECT kept
    working (hidden) for scripts written before 0.2."""
    parser.add_argument("--project", dest="project_option", metavar="NAME", help="project name")
    parser.add_argument("project_positional", nargs="?", help=argparse.SUPPRESS)


def project_name(args: argparse.Namespace) -> str:
    """The project of a command declared with `project_option`."""
    option, positional = args.project_option, args.project_positional
    if option and positional and option != positional:
        raise InputError(f"two projects given ({positional} and --project {option}): give one")
    name = option or positional
    if not name:
        raise InputError("which project? pass --project NAME")
    return str(name)


def progress_wanted(args: argparse.Namespace) -> bool:
    """Progress on stderr unless -q: a bar on a terminal, throttled lines elsewhere
    (client/progress.py)."""
    return not getattr(args, "quiet", False)


def given_token(args: argparse.Namespace) -> str | None:
    """The member token from --token, --token-file or $BLINDMATCH_TOKEN, if any."""
    if args.token and args.token_file:
        raise InputError("give the member token once: --token or --token-file, not both")
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not text"
            raise InputError(f"--token-file {args.token_file}: cannot read it ({why})") from None
        words = len(token.split())
        if words != 1:  # an empty file, or two tokens (files joined), 'Bearer TOKEN', ...
            found = "none (the file is empty)" if not words else f"{words} words"
            raise InputError(
                f"--token-file {args.token_file}: expected one token, found {found}; the file "
                "holds the token alone, as `project create --tokens-dir` writes it"
            )
        return token
    return str(args.token) if args.token else env("BLINDMATCH_TOKEN")


def member_token(args: argparse.Namespace) -> str:
    token = given_token(args)
    if not token:
        raise InputError(
            "no member token: pass --token-file FILE (or --token), or set BLINDMATCH_TOKEN"
        )
    return token


def admin_token() -> str:
    token = env("BLINDMATCH_ADMIN_TOKEN")
    if not token:
        raise InputError(
            "BLINDMATCH_ADMIN_TOKEN is not set; it holds the operator's token: the one `serve` "
            "was started with, or, where it was started without one, the one it wrote for its "
            "run: export BLINDMATCH_ADMIN_TOKEN=$(cat DATA_DIR/operator.token)"
        )
    return token


def connect(args: argparse.Namespace, token: str | None) -> MatcherClient:
    """A client for the matcher named by the connection options, checked to be there:
    a matcher that does not answer is reported at once, in one line."""
    # gRPC's own log lines (a failed TLS handshake, say) would repeat our one-line error.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    from blindmatch.client.remote.client import MatcherClient
    from blindmatch.client.remote.tls import channel_credentials, client_target

    credentials = channel_credentials(
        ca_cert=args.ca_cert,
        client_cert=args.client_cert,
        client_key=args.client_key,
        tls=client_target(args.server)[1],
    )

    def say_retrying(message: str) -> None:
        print(f"Warning: {message}", file=sys.stderr)

    def say_waiting(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    client = MatcherClient(
        args.server,
        token,
        credentials=credentials,
        on_retry=say_retrying,
        insecure=args.insecure,
        on_wait=None if getattr(args, "quiet", False) else say_waiting,
    )
    try:
        client.check_reachable()
    except BaseException:
        client.close()
        raise
    return client


def when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix))
