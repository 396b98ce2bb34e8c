"""Configuration of the Item-Language Model: the Q-Former, the two training phases and the evaluation.

Only plain pydantic models live here (no torch). `ILMConfig` nests `QFormerConfig` the way `Blip2Config` nests
its Q-Former config; sizes that come from the data or the LLM (`cf_embedding_size`, `llm_hidden_size`) are left
`None` and filled once by `train_ilm` (see `ILMConfig.for_data`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MINILM = "all-MiniLM-L6-v2"
# all-MiniLM-L6-v2's BertModel sizes: a text branch initialised from it must have exactly these.
MINILM_SIZES = {
    "hidden_size": 384,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "vocab_size": 30522,
    "hidden_act": "gelu",
}
MINILM_LAYERS = 6
MINILM_MAX_POSITIONS = 512
# weights of the frozen LLM (`load_frozen_llm`): float32 on the CPU; bfloat16 halves a big LLM's GPU memory
LLMDType = Literal["float32", "bfloat16", "float16"]


class QFormerConfig(BaseModel):
    """The querying transformer: K learned queries, a BERT-style text branch sharing self-attention with them,
    and cross-attention (queries only) to a short key/value sequence projected from the CF item embedding."""

    model_config = ConfigDict(extra="forbid")

    text_encoder: Literal["all-MiniLM-L6-v2"] | None = Field(
        MINILM,
        description="Pretrained encoder whose weights initialise self-attention, both FFN copies, word/position "
        "embeddings and layer norms (cross-attention stays random). None: everything random (unit tests).",
    )
    hidden_size: int = Field(384, gt=0, description="Width of queries and text tokens (MiniLM: 384).")
    num_hidden_layers: int = Field(6, gt=0, description="Transformer layers (MiniLM has 6; fewer copies the first).")
    num_attention_heads: int = Field(12, gt=0, description="Attention heads; must divide hidden_size.")
    intermediate_size: int = Field(1536, gt=0, description="FFN inner width (MiniLM: 1536).")
    hidden_act: str = Field("gelu", description="FFN activation (a transformers ACT2FN name).")
    hidden_dropout_prob: float = Field(0.1, ge=0, lt=1, description="Dropout on hidden states (BERT default).")
    attention_probs_dropout_prob: float = Field(0.1, ge=0, lt=1, description="Dropout on attention weights.")
    layer_norm_eps: float = Field(1e-12, gt=0, description="LayerNorm epsilon (BERT: 1e-12).")
    initializer_range: float = Field(0.02, gt=0, description="Std of the normal init of random weights.")
    vocab_size: int = Field(30522, gt=0, description="Text vocabulary; the MiniLM WordPiece tokenizer has 30522.")
    max_position_embeddings: int = Field(512, gt=0, description="Text positions (MiniLM: 512).")
    cross_attention_frequency: int = Field(
        2, gt=0, description="Layer i has cross-attention to the CF tokens when i % frequency == 0 (BLIP-2: 2)."
    )
    num_query_tokens: int = Field(
        8, gt=0, description="K, learned queries = soft tokens per item (BLIP-2: 32). 8 by the K ablation of "
        "benchmarks/results/ilm.md: the best next-item Recall@10 and genre F1 of K in {1, 4, 8, 16, 32}.",
    )
    cf_embedding_size: int | None = Field(
        None, gt=0, description="Width d_cf of the CF item embeddings; None until set from the data."
    )
    num_cf_tokens: int = Field(4, gt=0, description="n_kv: the CF vector is projected to this many key/value tokens.")
    cf_token_size: int = Field(384, gt=0, description="d_kv: width of each CF key/value token.")
    embed_dim: int = Field(256, gt=0, description="Width of the normalised ITC space of queries and text.")
    text_pooling: Literal["mean", "cls"] = Field(
        "mean",
        description="ITC text feature from the mean of the real text token states (all-MiniLM-L6-v2's own "
        "sentence pooling) or the [CLS] state (BLIP-2's BERT). MiniLM's [CLS] is no sentence embedding: through "
        "2 layers every ML-latest-small item text got the same [CLS] feature (pairwise cosine 1.0000) and ITC "
        "stayed at log(batch) for 100 steps.",
    )
    max_text_length: int = Field(48, gt=2, description="Item texts are truncated to this many tokens ([CLS]..[SEP]).")
    initial_temperature: float = Field(0.07, gt=0, description="Start of the learned ITC temperature (BLIP-2: 0.07).")
    temperature_bounds: tuple[float, float] = Field(
        (0.001, 0.5), description="The learned temperature is clamped into [low, high] (BLIP-2's bounds)."
    )

    @model_validator(mode="after")
    def _check_sizes(self) -> QFormerConfig:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.max_text_length > self.max_position_embeddings:
            raise ValueError("max_text_length must not exceed max_position_embeddings")
        low, high = self.temperature_bounds
        if not 0 < low <= self.initial_temperature <= high:
            raise ValueError("need 0 < temperature_bounds[0] <= initial_temperature <= temperature_bounds[1]")
        if self.text_encoder == MINILM:
            wrong = {k: getattr(self, k) for k, v in MINILM_SIZES.items() if getattr(self, k) != v}
            if self.num_hidden_layers > MINILM_LAYERS:
                wrong["num_hidden_layers"] = self.num_hidden_layers
            if self.max_position_embeddings > MINILM_MAX_POSITIONS:
                wrong["max_position_embeddings"] = self.max_position_embeddings
            if wrong:
                raise ValueError(
                    f"text_encoder={MINILM!r} needs its sizes {MINILM_SIZES} (at most {MINILM_LAYERS} layers, "
                    f"{MINILM_MAX_POSITIONS} positions); got {wrong}. Use those sizes or set text_encoder=None."
                )
        return self


class Phase1Config(BaseModel):
    """Item-language representation learning (LLM not involved): weighted sum of ITC, ITG, ITM, IIC and UIC.

    IIC and UIC need interaction histories (and UIC user CF vectors), passed to `train_ilm` as `interactions`.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(
        80, ge=0, description="Optimiser steps (ITC+ITG at batch 32, MiniLM size: about 1.5 s each on 2 idle cores)."
    )
    batch_size: int = Field(32, ge=2, description="Items per step; ITC/ITM negatives are the other items in it.")
    learning_rate: float = Field(3e-4, gt=0, description="AdamW peak learning rate (linear warmup, cosine decay).")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay (BLIP-2: 0.05).")
    warmup_steps: int = Field(7, ge=0, description="Linear warmup steps.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    itc_weight: float = Field(1.0, ge=0, description="Weight of the item-text contrastive loss; 0 switches it off.")
    itg_weight: float = Field(1.0, ge=0, description="Weight of item-grounded text generation; 0 switches it off.")
    itg_vocabulary: Literal["texts", "full"] = Field(
        "texts",
        description="ITG's softmax over the tokens of the phase-1 texts (texts) or all 30522 WordPiece tokens "
        "(full, as BLIP-2). The targets are the same; the texts of 700 ML-latest-small items use ~2.4k tokens, "
        "so the vocabulary projection, which dominated ITG, is ~12x smaller.",
    )
    itm_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of item-text matching; 0 switches it off. Off by default: its pass over positives "
        "and two hard negatives per item triples the Q-Former work per step, and nothing downstream reads the "
        "ITM head yet (it re-ranks text->item retrieval).",
    )
    itm_items: int | None = Field(
        None,
        ge=1,
        description="ITM on the first n items of each (shuffled) batch: their positive pairs, a hard-negative "
        "text per item and a hard-negative item per text, 3n rows, negatives still drawn from the whole batch's "
        "ITC similarities. None: every item of the batch (BLIP-2; 3 x batch_size rows, the costliest pass).",
    )
    iic_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of the item-item contrastive loss over consecutive items of a user's history; 0 "
        "switches it off. Needs interactions, which the embedded pipeline does not pass yet.",
    )
    uic_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of the user-item contrastive loss (user CF vector vs an item of that user); 0 "
        "switches it off. Needs interactions with user_embeddings.",
    )
    pair_batch_size: int = Field(32, ge=2, description="Pairs per step for IIC and for UIC (in-batch negatives).")
    item_metadata: bool = Field(
        False,
        description="Append director and cast (CC0 OMDb table of `pip install bokeh-sampledata`, joined by title "
        "and year; about 73% of ML-latest-small, 90% of its positives) to the phase-1 item texts. Off by "
        "default: not yet measured.",
    )

    @model_validator(mode="after")
    def _some_loss(self) -> Phase1Config:
        weights = (self.itc_weight, self.itg_weight, self.itm_weight, self.iic_weight, self.uic_weight)
        if not any(w > 0 for w in weights):
            raise ValueError(
                "phase 1 needs at least one of itc_weight, itg_weight, itm_weight, iic_weight, uic_weight > 0"
            )
        if self.itm_items is not None and self.itm_items > self.batch_size:
            raise ValueError(f"itm_items {self.itm_items} exceeds batch_size {self.batch_size}; lower it or use None")
        return self


class Phase2Config(BaseModel):
    """Item-language model: frozen LLM; Q-Former + adaptor trained on next-token loss of the answers of a
    multitask mix built from MovieLens: describe an item, recommend the next item after a history, answer a
    conversational request mixing liked items and a genre constraint. The last two need interactions."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(
        160, ge=0, description="Optimiser steps (about 1.5 s each at batch 8 with SmolLM2-135M, prefix cached)."
    )
    batch_size: int = Field(8, ge=1, description="Task examples per step.")
    learning_rate: float = Field(5e-4, gt=0, description="AdamW peak learning rate (linear warmup, cosine decay).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(10, ge=0, description="Linear warmup steps.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    instruction: str = Field(
        "Describe this movie: {item}",
        description="User turn of the item-description task; {item} is replaced by the item's K soft tokens.",
    )
    next_item_instruction: str = Field(
        "I liked {history}. Which movie should I watch next? Answer with its title.",
        description="User turn of the next-item task; {history} becomes one {item} block per history item.",
    )
    conversation_instruction: str = Field(
        "I loved {history}. Can you suggest a {genre} movie I would like?",
        description="User turn of the conversational task: liked items as {history}, a text constraint {genre}.",
    )
    describe_weight: float = Field(1.0, ge=0, description="Share of describe-{item} examples in the mix.")
    next_item_weight: float = Field(
        0.0, ge=0, description="Share of next-item examples (answer: the next title of a user); needs interactions."
    )
    conversation_weight: float = Field(
        0.0,
        ge=0,
        description="Share of conversational examples (answer: a later title of that genre); needs interactions.",
    )
    history_length: int = Field(3, gt=0, description="Items in a {history}: the ones right before the target.")
    examples_per_user: int = Field(4, gt=0, description="Next-item / conversation examples drawn per user history.")
    system_prompt: str | None = Field(
        None, description="System turn; None lets the chat template use its own default (if it has one)."
    )
    max_answer_tokens: int = Field(40, gt=0, description="Answers (describe(movie) + end of turn) are cut to this.")
    cache_prefix: bool = Field(
        True,
        description="Run the frozen LLM once, without gradients, over the chat-template head shared by every "
        "task (system turn, user header) and reuse its key/value cache every step (same loss, fewer FLOPs).",
    )

    @model_validator(mode="after")
    def _placeholders(self) -> Phase2Config:
        if self.instruction.count("{item}") != 1:
            raise ValueError("instruction must contain the placeholder {item} exactly once")
        if self.next_item_instruction.count("{history}") != 1:
            raise ValueError("next_item_instruction must contain {history} exactly once")
        if self.conversation_instruction.count("{history}") != 1 or "{genre}" not in self.conversation_instruction:
            raise ValueError("conversation_instruction must contain {history} once and {genre}")
        if self.describe_weight == self.next_item_weight == self.conversation_weight == 0:
            raise ValueError("phase 2 needs at least one of describe_weight, next_item_weight, conversation_weight > 0")
        return self


class EvaluationConfig(BaseModel):
    """What `train_ilm` measures after training."""

    model_config = ConfigDict(extra="forbid")

    heldout_items: int = Field(
        300, ge=0, description="Items kept out of both phases; ITC text->item recall is measured on their texts."
    )
    recall_k: int = Field(10, gt=0, description="k of ITC text->item Recall@k (ranked over the whole catalogue).")
    recall_after_phase1: bool = Field(
        False,
        description="Also measure ITC recall between the phases (shows what phase 2 does to the shared "
        "self-attention); costs one more Q-Former pass over every catalogue item.",
    )
    generation_items: int = Field(
        50, ge=0, description="Items (trained in phase 2, and as many held out) described by greedy generation."
    )
    max_new_tokens: int = Field(32, gt=0, description="Token limit of each greedy description.")
    batch_size: int = Field(256, gt=0, description="Items per forward pass when encoding or building tables.")


class ILMConfig(BaseModel):
    """Everything the Item-Language Model needs; `qformer` sizes the item encoder, the rest drives training."""

    model_config = ConfigDict(extra="forbid")

    qformer: QFormerConfig = Field(default_factory=QFormerConfig, description="The item encoder.")
    llm_hidden_size: int | None = Field(
        None, gt=0, description="d_llm, the frozen LLM's embedding width (adaptor output); None until set."
    )
    phase1: Phase1Config = Field(default_factory=Phase1Config, description="Representation learning.")
    phase2: Phase2Config = Field(default_factory=Phase2Config, description="Frozen-LLM alignment.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="Post-training metrics.")
    seed: int = Field(0, description="Seed of initialisation, sampling and the held-out split.")

    def for_data(self, cf_embedding_size: int, llm_hidden_size: int) -> ILMConfig:
        """This config with the data/LLM sizes filled in; raises ValueError where a set size disagrees."""
        given = {"cf_embedding_size": self.qformer.cf_embedding_size, "llm_hidden_size": self.llm_hidden_size}
        actual = {"cf_embedding_size": cf_embedding_size, "llm_hidden_size": llm_hidden_size}
        clash = {k: (given[k], actual[k]) for k in given if given[k] is not None and given[k] != actual[k]}
        if clash:
            raise ValueError(f"configured sizes disagree with the data/LLM (configured, actual): {clash}")
        qformer = self.qformer.model_copy(update={"cf_embedding_size": cf_embedding_size})
        return self.model_copy(update={"qformer": qformer, "llm_hidden_size": llm_hidden_size})
