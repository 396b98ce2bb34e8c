"""Every hyper-parameter of the retrieval tier, documented, with its cross-field rules."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

ModelKind = Literal["two_tower", "mf"]
LossKind = Literal["lambdarank", "warp", "softmax", "bpr"]
RankEstimator = Literal["sampled", "scaled", "smoothed", "posterior"]
SamplingKind = Literal["uniform", "popularity"]
SplitKind = Literal["strong", "temporal"]
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
# where training runs (`retrieval.device.resolve_device`): not a hyper-parameter, so no field of the configs here
DeviceSetting = Annotated[str, StringConstraints(pattern=DEVICE_PATTERN)]


class RetrievalConfig(BaseModel):
    """Data, split, model, loss and optimisation settings of `train_retrieval`.

    Defaults are the ones measured best on ml-latest-small (see docs in `train.py`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- data -------------------------------------------------------------------------------------------------
    positive_threshold: float = Field(
        3.5, description="A rating strictly above this is an implicit positive (Liang et al. 2018 keep > 3.5)."
    )

    # --- split ------------------------------------------------------------------------------------------------
    split: SplitKind = Field(
        "strong",
        description="`strong`: hold out whole users (fold in part of their items, score the rest); "
        "`temporal`: every user's last positive is the test target, the one before it the validation target.",
    )
    heldout_user_fraction: float = Field(
        0.1,
        gt=0.0,
        lt=0.5,
        description="Strong split: fraction of eligible users held out for validation, and again for test.",
    )
    max_heldout_users: int = Field(
        10_000, ge=1, description="Strong split: cap on validation (and on test) users; ML-20M uses 10,000 each."
    )
    min_user_positives: int = Field(
        5, ge=2, description="Strong split: users with fewer positives always stay in training (never held out)."
    )
    fold_in_fraction: float = Field(
        0.8, gt=0.0, lt=1.0, description="Strong split: share of a held-out user's positives given as history."
    )

    # --- model ------------------------------------------------------------------------------------------------
    model: ModelKind = Field(
        "two_tower",
        description="`two_tower`: user tower = weighted mean of an input-item table (fold-in is free); "
        "`mf`: a user table, new users folded in by an iALS-style ridge solve.",
    )
    embedding_dim: int = Field(64, ge=1, description="Width of item (and user) embeddings.")
    user_projection: bool = Field(False, description="Two-tower: apply a learned d x d linear map after pooling.")
    init_std: float = Field(0.05, gt=0.0, description="Standard deviation of the normal initialisation of tables.")
    input_dropout: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="Two-tower training: each history item is hidden from the user tower with this probability "
        "and becomes a target; the kept ones are the input (a fold-in rehearsal).",
    )
    fold_in_l2: float = Field(1.0, gt=0.0, description="MF fold-in: ridge penalty lambda on the user vector.")
    fold_in_unobserved_weight: float = Field(
        0.1, ge=0.0, description="MF fold-in: iALS weight alpha0 of the all-items Gramian (pushes unseen items to 0)."
    )

    # --- loss -------------------------------------------------------------------------------------------------
    loss: LossKind = Field("lambdarank", description="Sampled-batch loss: lambdarank, warp, softmax (logQ) or bpr.")
    rank_estimator: RankEstimator = Field(
        "posterior", description="How lambdarank / warp estimate full-catalogue ranks from the sampled negatives."
    )
    lambdarank_cutoff: int | None = Field(
        None, ge=1, description="LambdaRank: NDCG@k-aware lambdas (gain 0 beyond rank k); None = untruncated."
    )
    warp_margin: float = Field(1.0, gt=0.0, description="WARP: hinge margin; also the violator margin.")
    num_negatives: int = Field(128, ge=1, description="m: negatives sampled once per batch and shared by all rows.")
    sampling: SamplingKind = Field(
        "uniform", description="Negative sampling distribution: uniform or popularity^alpha."
    )
    popularity_alpha: float = Field(
        0.75, ge=0.0, le=1.0, description="Exponent of popularity sampling (used only when sampling=popularity)."
    )
    remove_accidental_hits: bool = Field(
        True, description="Mask sampled negatives that are known positives of the row's user."
    )

    # --- optimisation -----------------------------------------------------------------------------------------
    epochs: int = Field(150, ge=1, description="Maximum passes over the training users.")
    batch_users: int = Field(16, ge=1, description="Users per gradient step (their targets form the batch).")
    learning_rate: float = Field(0.02, gt=0.0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="Adam (coupled) L2 penalty on all parameters.")
    eval_every: int = Field(1, ge=1, description="Epochs between validation evaluations.")
    patience: int = Field(
        30,
        ge=1,
        description="Early stopping: evaluations without a better validation NDCG@k before stopping (validation "
        "NDCG dips for a while after the model has learnt popularity, so keep this generous).",
    )
    seed: int = Field(0, description="Seed of the split, the initialisation, the masks and the negatives.")

    # --- evaluation -------------------------------------------------------------------------------------------
    recall_ks: tuple[int, ...] = Field((20, 50), description="Cut-offs of the reported Recall@k.")
    ndcg_k: int = Field(100, ge=1, description="Cut-off of NDCG@k, also the early-stopping criterion.")

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> RetrievalConfig:
        if self.loss in ("softmax", "bpr") and self.lambdarank_cutoff is not None:
            raise ValueError(f"lambdarank_cutoff applies to loss='lambdarank' only, not loss={self.loss!r}; remove it")
        if self.loss == "warp" and self.lambdarank_cutoff is not None:
            raise ValueError("lambdarank_cutoff applies to loss='lambdarank' only; remove it for loss='warp'")
        if self.user_projection and self.model == "mf":
            raise ValueError("user_projection needs model='two_tower' (MF has no user tower to project)")
        if not self.recall_ks or any(k < 1 for k in self.recall_ks):
            raise ValueError(f"recall_ks must be positive cut-offs, got {self.recall_ks}")
        return self
