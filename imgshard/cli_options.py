"""Options several ``imgshard`` commands share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .errors import ImgshardError
from .storage import parse_storage_options

if TYPE_CHECKING:
    from tqdm import tqdm


def storage_option(command):
    """``--storage-option KEY=VALUE`` (repeatable), passed to fsspec for URLs as a dict."""
    def to_dict(ctx: click.Context, param: click.Parameter, pairs: tuple[str, ...]):
        try:
            return parse_storage_options(pairs)
        except ImgshardError as error:  # one line and exit 1, as every bad option value
            raise click.ClickException(str(error)) from None

    return click.option("--storage-option", "storage_options", multiple=True, metavar="KEY=VALUE",
                        callback=to_dict,
                        help="fsspec option for URLs (repeatable), e.g. endpoint_url=http://...,"
                             " anon=true.")(command)


class LazyProgressBar:
    """A tqdm bar that appears with the first progress, so early errors print on a clean line."""

    def __init__(self, **options: Any) -> None:
        self.options = {"unit": "img", "dynamic_ncols": True, **options}
        self.bar: tqdm | None = None

    def update(self, count: int) -> None:
        if self.bar is None:
            from tqdm import tqdm  # imported here: --quiet builds start ~12 ms sooner

            self.bar = tqdm(**self.options)
        self.bar.update(count)

    def __enter__(self) -> LazyProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()
