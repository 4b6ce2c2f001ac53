"""How much of each test query the query-likelihood score reads (queries are cut at ScorerConfig.max_query_tokens).

    PYSERINI_QPEFT_DATA=../shared/data/beir python docs/experiments/query-budget.py arguana scifact

Prints, per dataset: the test queries' token counts (SmolLM2's tokenizer, as the prompt tokenizes them), how many
are longer than the budget, and the share of query tokens scored. Only the tokenizer is used (no scoring).
"""
import statistics
import sys

from pyserini_qpeft.data import BeirDataset
from pyserini_qpeft.lm.backbone import FrozenLM, LMConfig
from pyserini_qpeft.lm.prompts import PromptBuilder
from pyserini_qpeft.lm.scoring import ScorerConfig

config = ScorerConfig()
builder = PromptBuilder(FrozenLM.load(LMConfig(device="cpu", dtype="fp32")).tokenizer, config)
for name in sys.argv[1:] or ["arguana", "scifact"]:
    queries = BeirDataset.find(name).topics("test")
    full = [len(builder.follow(" " + q.text.strip(), literal=True)) for q in queries]
    scored = [len(builder.query_tokens(q.text)) for q in queries]
    cut = sum(n > config.max_query_tokens for n in full)
    print(f"{name}: {len(queries)} test queries, tokens median {statistics.median(full):g}, max {max(full)}; "
          f"{cut} ({100 * cut / len(queries):.1f} %) longer than {config.max_query_tokens} tokens; "
          f"{sum(scored) / sum(full):.3f} of all query tokens scored")
