"""What clients send to the registries: ``POST /registry/tools``, ``POST /registry/datasets`` and
``POST /pipeline/init`` (which writes the pipeline's federation registration).

Each request model is strict (``extra="forbid"``): an unknown field is a 400 naming it, and nothing is
written. The fields, their types and validators are the stored models' (``orchestrator.domain.pipeline``):
``ToolRequest`` and ``PipelineRequest`` *are* a ``Tool`` and a ``Pipeline`` with only the extra rule
changed, so a service that takes the stored model takes the request as it is. ``DatasetRequest``
differs in shape (the prototype wraps ``master`` and ``nodes`` in ``body``) and is turned into a
``Dataset`` by ``dataset()``.

Every field the prototype's clients send (its maoctl, its installer, the curl samples of its README)
is modelled: a dataset's ``body`` is the only one that is not a stored field, and it is accepted
explicitly (``DatasetRequest``) and documented in the OpenAPI document.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from .domain.pipeline import REQUEST_CONFIG, Dataset, Master, Name, Nodes, Pipeline, Request, StrictBool, Tool


class ToolRequest(Tool):
    """``POST /registry/tools``: ``{name, image, author?, data_repo?, code_repo?, artefact?,
    description?}`` (null for an optional text is "", as the prototype's maoctl sends it)."""

    model_config = REQUEST_CONFIG


class PipelineRequest(Pipeline):
    """``POST /pipeline/init``: ``{name, description?, run_timeout?, steps, version?}``. Steps were
    strict before pipelines were (``Step``). What ``GET /pipeline/{name}`` answers is a valid body: its
    ``version`` makes the init a compare-and-set (edit what you read, and nobody's change in between
    is silently overwritten)."""

    model_config = REQUEST_CONFIG

    version: int | None = Field(
        default=None,
        ge=1,
        description="the version this definition was read at (GET /pipeline/{name}); when the pipeline "
        "is at another version now, 409 version_conflict and nothing is stored",
    )


class DatasetBody(Request):
    """The prototype's wrapper around a dataset's fields: ``body: {master, nodes?}``."""

    master: Master
    nodes: Nodes = Field(default_factory=list)


class DatasetRequest(Request):
    """``POST /registry/datasets``: ``{name, master, nodes?}``, or the prototype's form ``{name, body:
    {master, nodes?}}`` (its maoctl, installer and README send that one). Not both at once."""

    name: Name
    master: Master | None = None
    nodes: Nodes | None = None
    body: DatasetBody | None = Field(
        default=None, description="the prototype's form: master and nodes inside body instead of beside name"
    )

    @model_validator(mode="after")
    def _one_form(self) -> DatasetRequest:
        if self.body is not None and (self.master is not None or self.nodes is not None):
            raise ValueError("give master and nodes either beside name or inside body, not both")
        if self.body is None and self.master is None:
            raise ValueError("master is required (or the prototype's body: {master, nodes})")
        return self

    def dataset(self) -> Dataset:
        """The dataset this request registers (the fields were validated already)."""
        if self.body is not None:
            return Dataset(name=self.name, master=self.body.master, nodes=list(self.body.nodes))
        assert self.master is not None  # _one_form
        return Dataset(name=self.name, master=self.master, nodes=list(self.nodes or []))


class NoBody(Request):
    """A write that takes no fields (``POST /runs/{id}/cancel``): no body, or ``{}``."""


class OwnerRequest(Request):
    """``POST /registry/{kind}/{name}/owner``: ``{owner}``, the instance that owns the registration
    from now on (this instance itself to claim one registered before registrations had owners)."""

    owner: Name


class AcceptRequest(Request):
    """``POST /pipeline/{name}/accept`` and ``POST /registry/{kind}/{name}/accept``: no body (accept),
    or ``{dry_run: true}`` to see the differences without accepting them."""

    dry_run: StrictBool = False
