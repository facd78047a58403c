"""Batch inference for evaluation: greedy generation and label-choice scoring.

- Prompts are encoded by LLaMA-Factory's own template code (`encode_oneturn`) and fitted to
  cutoff_len the way training fits them (train/prompts.py), so they match the training tokens.
- The instruction prefix shared by every prompt (chat header + task instruction) is run through
  the model once; its KV cache is expanded over each batch, which then only computes the
  per-example suffix. Positions continue after the prefix, so results equal a full prefill.
- Batches are sorted by length (little padding), suffixes left-padded, decoded greedily with
  our own loop (one forward per new token, stopping per row at the template's stop tokens).
- Label-choice mode scores every label's full token sequence (target + end-of-turn) by
  log-likelihood after the prompt, in one extra forward pass over the batch x labels.
Results are yielded per batch so the caller can persist them as they finish.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ftk.fileio import no_library_bars
from ftk.train.prompts import load_template


@dataclass
class Loaded:
    model: object
    tokenizer: object
    template: object
    stop_ids: list[int]
    device: str
    virtual: object = None  # prompt tuning: the learned virtual-token embeddings [n, hidden], in front

    @property
    def n_virtual(self) -> int:
        return 0 if self.virtual is None else int(self.virtual.shape[0])


def load(model_path: str, template_name: str, *, adapter: str | None = None,
         trust_remote_code: bool = False, device: str | None = None, dtype: str = "auto") -> Loaded:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    template = load_template(tokenizer, template_name)
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    with no_library_bars():
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype,
                                                     trust_remote_code=trust_remote_code)
    virtual = None
    if adapter:
        from peft import PeftModel

        with no_library_bars():
            model = PeftModel.from_pretrained(model, adapter)
        if model.peft_config["default"].peft_type.value == "PROMPT_TUNING":
            # Prompt tuning changes no weight: the base model runs with the virtual tokens as a prefix.
            virtual = model.get_prompt_embedding_to_save("default").detach().to(torch_dtype)
            model = model.get_base_model()
    model.to(device).eval()
    stop_ids = {tokenizer.eos_token_id}
    for word in getattr(template, "stop_words", []) or []:
        tid = tokenizer.convert_tokens_to_ids(word)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            stop_ids.add(tid)
    return Loaded(model, tokenizer, template, sorted(i for i in stop_ids if i is not None), device,
                  None if virtual is None else virtual.to(device))


def common_prefix_len(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix shared by every prompt, leaving each at least one own token."""
    if not prompts:
        return 0
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            break
    return max(n, 0)


class Engine:
    """Greedy generation and label-choice scoring with a shared-prefix KV cache."""

    def __init__(self, loaded: Loaded, prompts: Sequence[list[int]], *, reuse_prefix: bool = True):
        import torch

        self.torch = torch
        self.loaded = loaded
        self.model = loaded.model
        self.device = loaded.device
        tok = loaded.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else loaded.stop_ids[0]
        self.prompts = prompts
        self.prefix_len = common_prefix_len(prompts) if reuse_prefix else 0
        # Prompt tuning's virtual tokens come first (positions 0..n-1, as PEFT places them): they
        # are part of the shared prefix, so `offset` = virtual tokens + shared prompt tokens.
        self.offset = loaded.n_virtual + self.prefix_len
        self.prefix_kv = None
        self.fallback_rows = 0  # rows whose greedy output left the label drafts
        if self.offset:
            ids = torch.tensor([list(prompts[0][: self.prefix_len])], dtype=torch.long, device=self.device)
            with torch.inference_mode():
                if loaded.virtual is None:
                    out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
                else:
                    embeds = torch.cat([loaded.virtual[None], self.model.get_input_embeddings()(ids)], dim=1)
                    out = self.model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1)
            self.prefix_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]

    # -- building blocks --------------------------------------------------------------------

    def _cache(self, batch: int):
        from transformers import DynamicCache

        if self.prefix_kv is None:
            return DynamicCache(config=self.model.config)
        return DynamicCache([(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
                             for k, v in self.prefix_kv], config=self.model.config)

    def prefill(self, idx: Sequence[int]):
        """Run the suffixes of prompts[idx]: (last-position logits, cache, mask, next positions)."""
        torch = self.torch
        P, O = self.prefix_len, self.offset
        suffixes = [self.prompts[i][P:] for i in idx]
        width = max(len(s) for s in suffixes)
        B = len(idx)
        ids = torch.full((B, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, O + width), dtype=torch.long)
        mask[:, :O] = 1
        pos = torch.zeros((B, width), dtype=torch.long)
        lengths = torch.tensor([len(s) for s in suffixes])
        for row, s in enumerate(suffixes):
            n = len(s)
            ids[row, width - n:] = torch.tensor(s, dtype=torch.long)
            mask[row, O + width - n:] = 1
            pos[row, width - n:] = torch.arange(O, O + n)
        cache = self._cache(B)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device), past_key_values=cache, use_cache=True,
                         logits_to_keep=1)
        return out.logits[:, -1, :].float(), out.past_key_values, mask.to(self.device), (O + lengths).to(self.device)

    def _with_backoff(self, fn, batch_size: int) -> Iterator:
        """Run fn(batch indices) per batch; on CUDA out-of-memory, halve the batch size and retry."""
        torch = self.torch
        order = sorted(range(len(self.prompts)), key=lambda i: -len(self.prompts[i]))
        pos, bs = 0, max(1, batch_size)
        while pos < len(order):
            idx = order[pos:pos + bs]
            try:
                with torch.inference_mode():
                    result = fn(idx)
            except torch.cuda.OutOfMemoryError:
                if bs == 1:
                    raise
                torch.cuda.empty_cache()
                bs //= 2
                continue
            yield idx, result
            pos += len(idx)

    # -- modes ------------------------------------------------------------------------------

    def _decode(self, logits, cache, mask, next_pos, max_new_tokens: int) -> list[list[int]]:
        """Plain greedy loop from prefill state: one forward per new token, rows stop at a stop token."""
        torch = self.torch
        B = logits.shape[0]
        stop = torch.tensor(self.loaded.stop_ids, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        tokens = []
        for step in range(max_new_tokens):
            nxt = logits.argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_id), nxt)
            tokens.append(nxt)
            done |= torch.isin(nxt, stop)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones((B, 1), dtype=mask.dtype, device=self.device)], dim=1)
            out = self.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos[:, None],
                             past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            next_pos = next_pos + 1
            logits = out.logits[:, -1, :].float()
        return torch.stack(tokens, dim=1).tolist()

    def _texts(self, rows: list[list[int]]) -> list[str]:
        stops = set(self.loaded.stop_ids)
        out = []
        for row in rows:
            cut = next((j for j, t in enumerate(row) if t in stops), len(row))
            out.append(self.loaded.tokenizer.decode(row[:cut], skip_special_tokens=True))
        return out

    def _generate(self, idx: list[int], max_new_tokens: int, label_ids: list[list[int]] | None = None) -> list[str]:
        logits, cache, mask, next_pos = self.prefill(idx)
        if not label_ids:
            return self._texts(self._decode(logits, cache, mask, next_pos, max_new_tokens))
        return self._texts(self._generate_with_drafts(logits, cache, mask, next_pos, max_new_tokens, label_ids))

    def _generate_with_drafts(self, logits, cache, mask, next_pos, max_new_tokens: int,
                              label_ids: list[list[int]]) -> list[list[int]]:
        """Greedy generation for a closed label set, exactly: every label continuation is scored
        in one packed forward; each row's greedy path is then read off those logits for as long as
        it follows a label. Rows that leave every label fall back to the plain loop."""
        torch = self.torch
        prompt_len = mask.shape[1]
        stops = set(self.loaded.stop_ids)
        first = logits.argmax(-1).tolist()
        logp, seg, offs, _ = self._packed_labels(cache, mask, next_pos, label_ids)
        greedy_at = logp.argmax(-1).tolist() if logp is not None else None  # [B][S]
        where = {(k, j): s for s, (k, j) in enumerate(zip(seg, offs))}
        rows: list[list[int] | None] = []
        for b, tok in enumerate(first):
            out = [tok]
            cands = [k for k, lab in enumerate(label_ids) if lab[0] == tok]
            j = 0
            while out[-1] not in stops and len(out) < max_new_tokens:
                cands = [k for k in cands if j + 1 < len(label_ids[k]) and (k, j) in where]
                if not cands:
                    break
                nxt = greedy_at[b][where[(cands[0], j)]]
                out.append(nxt)
                cands = [k for k in cands if label_ids[k][j + 1] == nxt]
                j += 1
            finished = out[-1] in stops or len(out) >= max_new_tokens
            rows.append(out if finished else None)
        todo = [b for b, r in enumerate(rows) if r is None]
        if todo:  # left the label set: decode those rows normally from the prompt state
            cache.crop(prompt_len)
            sel = torch.tensor(todo, device=self.device)
            cache.batch_select_indices(sel)
            for b, r in zip(todo, self._decode(logits[sel], cache, mask[sel], next_pos[sel], max_new_tokens)):
                rows[b] = r
        self.fallback_rows += len(todo)
        return rows

    def generate(self, *, batch_size: int = 64, max_new_tokens: int = 16,
                 label_ids: list[list[int]] | None = None) -> Iterator[tuple[list[int], list[str]]]:
        """Yield (indices, texts) per batch; greedy; longest prompts first.

        With `label_ids` (a closed label set) the labels serve as verified drafts: same output as
        plain greedy decoding, in about the cost of one extra forward pass.
        """
        yield from self._with_backoff(lambda idx: self._generate(idx, max_new_tokens, label_ids), batch_size)

    def _packed_labels(self, cache, mask, next_pos, label_ids: list[list[int]]):
        """One forward over all label continuations, packed in the sequence dimension.

        Label k's tokens lab[:-1] are fed after the prompt with a block-diagonal causal 4D mask
        (label k sees the prompt and its own earlier tokens only), so the prompt cache is not
        copied K times. Returns (log-probs [B, S, V], segment ids [S], offsets [S], targets [S]).
        """
        torch = self.torch
        inputs, targets, seg, offs = [], [], [], []
        for k, lab in enumerate(label_ids):
            inputs += lab[:-1]
            targets += lab[1:]
            seg += [k] * (len(lab) - 1)
            offs += list(range(len(lab) - 1))
        S = len(inputs)
        if S == 0:
            return None, [], [], []
        B = mask.shape[0]
        dev = self.device
        seg_t = torch.tensor(seg, device=dev)
        off_t = torch.tensor(offs, device=dev)
        block = (seg_t[:, None] == seg_t[None, :]) & (off_t[None, :] <= off_t[:, None])  # [S, S]
        prompt = mask.bool()[:, None, None, :].expand(B, 1, S, mask.shape[1])
        full = torch.cat([prompt, block[None, None].expand(B, 1, S, S)], dim=-1)
        if getattr(self.model.config, "_attn_implementation", "sdpa") == "eager":
            full = torch.zeros(full.shape, dtype=self.model.dtype, device=dev).masked_fill(
                ~full, torch.finfo(self.model.dtype).min)
        ids = torch.tensor(inputs, device=dev)[None, :].expand(B, S)
        pos = next_pos[:, None] + off_t[None, :]
        out = self.model(input_ids=ids, attention_mask=full, position_ids=pos, past_key_values=cache, use_cache=True)
        return torch.log_softmax(out.logits.float(), dim=-1), seg, offs, targets

    def _choice(self, idx: list[int], label_ids: list[list[int]]):
        """Log-likelihood of every label sequence after each prompt: [B, K]."""
        torch = self.torch
        logits, cache, mask, next_pos = self.prefill(idx)
        B, K = len(idx), len(label_ids)
        scores = torch.log_softmax(logits, dim=-1)[:, [lab[0] for lab in label_ids]]  # [B, K]
        logp, seg, _, targets = self._packed_labels(cache, mask, next_pos, label_ids)
        if logp is None:
            return scores
        dev = self.device
        lp = logp.gather(-1, torch.tensor(targets, device=dev)[None, :, None].expand(B, len(targets), 1))[..., 0]
        return scores + torch.zeros((B, K), device=dev).index_add_(1, torch.tensor(seg, device=dev), lp)

    def choice(self, label_ids: list[list[int]], *, batch_size: int = 64) -> Iterator[tuple[list[int], object]]:
        """Yield (indices, log-likelihood scores [B, K]) per batch."""
        yield from self._with_backoff(lambda idx: self._choice(idx, label_ids), batch_size)


def vllm_generate(model_path: str, prompts: Sequence[list[int]], tokenizer, template, *, adapter: str | None = None,
                  max_new_tokens: int = 16, trust_remote_code: bool = False, chunk: int = 2048,
                  ) -> Iterator[tuple[list[int], list[str]]]:
    """Greedy generation with vLLM (GPU nodes; `pip install vllm`), same prompts token for token.

    Yields per chunk of prompts so predictions are persisted as they finish, like the HF engine.
    """
    try:
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
    except ImportError:
        from ftk.errors import FtkError

        raise FtkError("--engine vllm needs vLLM (GPU nodes): pip install -e '.[gpu]'") from None
    stop_ids = [tokenizer.eos_token_id]
    for word in getattr(template, "stop_words", []) or []:
        tid = tokenizer.convert_tokens_to_ids(word)
        if isinstance(tid, int):
            stop_ids.append(tid)
    llm = LLM(model=model_path, trust_remote_code=trust_remote_code, enable_lora=adapter is not None)
    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=stop_ids,
                            skip_special_tokens=True)
    lora = None
    if adapter:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("ftk-adapter", 1, adapter)
    for s in range(0, len(prompts), chunk):
        idx = list(range(s, min(s + chunk, len(prompts))))
        outs = llm.generate([TokensPrompt(prompt_token_ids=list(prompts[i])) for i in idx], params,
                            lora_request=lora, use_tqdm=False)
        yield idx, [o.outputs[0].text for o in outs]
