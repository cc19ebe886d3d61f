# Shared by the data-parallel CLI tests (sourced): the SFT set whose answers
# differ in length, so the ranks' shards differ in loss tokens and the
# loss-weight scaling of the gradient sum is exercised.

# uneven_sft FILE: 20 question/answer records
uneven_sft() { python3 - "$1" <<'PY'
import json, sys
qa = [("what is two plus two", "four"), ("name a color", "blue"), ("say hi", "hi there"),
      ("what is the capital of france", "paris"), ("count to three", "one two three")]
with open(sys.argv[1], "w") as f:
    for i in range(20):
        q, a = qa[i % 5]
        f.write(json.dumps({"question": q, "answer": " ".join([a] * (1 + i % 3))}) + "\n")
PY
}
