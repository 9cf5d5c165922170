"""``python -m devstack`` (make run): the whole stack until Ctrl-C.
``python -m devstack exec COMMAND [ARG...]`` (make migrate, make worker, make scheduler): COMMAND
against the local stack's servers, started or attached to when no URL is set."""

import sys

from devstack.stack import exec_command, main, say

args = sys.argv[1:]
if args[:1] == ["exec"]:
    sys.exit(exec_command(args[1:]))
if args:
    say("usage: python -m devstack | python -m devstack exec COMMAND [ARG...]")
    sys.exit(2)
sys.exit(main())
