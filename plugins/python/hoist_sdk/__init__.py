"""Write hoist hook plugins in Python.

A plugin is a class with the hooks it needs; `export` turns it into the `Hooks` class
componentize-py builds into a component of the `hoist:hooks/hook` world::

    import hoist_sdk
    from hoist_sdk import http

    class Drain(hoist_sdk.Hook):
        def pre_scale(self, ctx):
            config = hoist_sdk.config.parse(ctx.config, {"port": int})
            ...
            return hoist_sdk.in_progress("draining", 2000, "2 pods draining")  # or done("...")

    Hooks = hoist_sdk.export(Drain)

Raise `InvalidConfig`, `Remote` or `Other` to fail a hook with that category; an
`http.HttpError` is `Remote`, any other exception `Other` (with its message).
"""

from typing import Any, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import hoist_hooks_types as types
from wit_world.imports import log as _log
from wit_world.imports import secrets as _secrets

from . import config, http  # noqa: F401  (re-exported modules)

Direction = types.Direction
Stage = types.Stage
ScaleContext = types.ScaleContext
Pod = types.Pod
Failure = types.Failure


class HookError(Exception):
    """A hook's failure; the subclass is its category."""


class InvalidConfig(HookError):
    """The configuration is unusable (`invalid-config`)."""


class Remote(HookError):
    """The product answered wrong or not at all (`remote`)."""


class Other(HookError):
    """Anything else (`other`)."""


def done(message: str = "done") -> types.Outcome:
    """The hook finished."""
    return types.Outcome_Done(message)


def in_progress(state: str, retry_after_ms: int, message: str) -> types.Outcome:
    """Call again after `retry_after_ms`, handing back `state` as `ctx.saved_state`."""
    return types.Outcome_InProgress(types.Progress(state, retry_after_ms, message))


def secret(name: str) -> Optional[str]:
    """The secret handed to this call under `name` (`spec.hooks.secrets`), if any."""
    return _secrets.get(name)


def debug(message: str) -> None:
    _log.log(_log.Level.DEBUG, message)


def info(message: str) -> None:
    _log.log(_log.Level.INFO, message)


def warn(message: str) -> None:
    _log.log(_log.Level.WARN, message)


def error(message: str) -> None:
    _log.log(_log.Level.ERROR, message)


def is_scale_down(ctx: ScaleContext) -> bool:
    return ctx.direction == Direction.DOWN


class Hook:
    """The four hooks, with defaults: done at once, and any JSON configuration accepted."""

    def pre_scale(self, ctx: ScaleContext) -> types.Outcome:
        return done()

    def post_scale(self, ctx: ScaleContext) -> types.Outcome:
        return done()

    def on_failure(self, ctx: ScaleContext, failure: Failure) -> None:
        return None

    def validate_config(self, config_text: str) -> None:
        """Raise (any exception) with a message naming what is wrong."""
        config.parse(config_text, {})


def _as_hook_error(e: BaseException) -> Err:
    message = str(e) or type(e).__name__
    if isinstance(e, InvalidConfig) or isinstance(e, config.ConfigError):
        return Err(types.HookError_InvalidConfig(message))
    if isinstance(e, (Remote, http.HttpError)):
        return Err(types.HookError_Remote(message))
    return Err(types.HookError_Other(message))


def export(hook_class: type) -> type:
    """The `Hooks` class of the component: calls `hook_class`'s hooks and turns exceptions
    into the hook errors of the contract."""
    hook = hook_class()

    class Hooks(exports.Hooks):
        def pre_scale(self, ctx: ScaleContext) -> types.Outcome:
            try:
                return hook.pre_scale(ctx)
            except Exception as e:
                raise _as_hook_error(e) from None

        def post_scale(self, ctx: ScaleContext) -> types.Outcome:
            try:
                return hook.post_scale(ctx)
            except Exception as e:
                raise _as_hook_error(e) from None

        def on_failure(self, ctx: ScaleContext, failure: Failure) -> None:
            try:
                hook.on_failure(ctx, failure)
            except Exception as e:
                raise _as_hook_error(e) from None

        def validate_config(self, config_text: str) -> None:
            try:
                hook.validate_config(config_text)
            except Exception as e:
                raise Err(str(e) or type(e).__name__) from None

    return Hooks


__all__ = [
    "Any",
    "Direction",
    "Failure",
    "Hook",
    "HookError",
    "InvalidConfig",
    "Other",
    "Pod",
    "Remote",
    "ScaleContext",
    "Stage",
    "config",
    "debug",
    "done",
    "error",
    "export",
    "http",
    "in_progress",
    "info",
    "is_scale_down",
    "secret",
    "warn",
]
