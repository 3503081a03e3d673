#!/usr/bin/python3
"""Debian 12's torchrun with the one fix it needs to run at all.

Debian 12 ships PyTorch 1.13 with Python 3.11. Its torchrun parses the
default `--redirects 0` / `--tee 0` with Std.from_str, which looks the value
up by iterating the Std flag enum; Python 3.11 no longer yields the zero
member when iterating a flag, so "0" becomes None and every launch fails
(`'NoneType' object has no attribute 'get'`). Later PyTorch releases fix
this. Everything else is torchrun itself.
"""
import re
import sys

from torch.distributed.elastic.multiprocessing.api import Std


def _from_str(cls, vm):
    if re.fullmatch(r"\d", vm):
        return Std(int(vm))
    return {int(i): Std(int(v)) for i, v in (m.split(":") for m in vm.split(","))}


Std.from_str = classmethod(_from_str)

from torch.distributed.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
