#!/usr/bin/env bash
# tokenize end to end with GPT-2's real vocabulary (tests/fixtures/gpt2):
#  - known ids for a known string; encode | decode is the identity on varied
#    text (unicode, emoji, tabs, runs of spaces, special-token strings);
#  - --special turns "<|endoftext|>" into 50256, without it the text stays text;
#  - --data/--field read JSONL; a tokenizer.json directory and a .ckpt work too;
#  - bad input (missing model, bad flag, bad JSONL line, bad id) exits 1 with
#    a message naming the file/line/flag.
# usage: bash tokenize.sh BIN_DIR
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
GPT2=$HERE/../fixtures/gpt2
TOK=$BIN/tokenize
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/lib/check.sh"

"$TOK" --help >"$T/help" 2>&1
check "--help exits 0" "[ $? -eq 0 ] && grep -q 'usage: tokenize' $T/help"

out=$(printf 'Hello world\n' | "$TOK" --model "$GPT2")
check "Hello world -> 15496 995 (got $out)" "[ '$out' = '15496 995' ]"

printf '%s\n' "The quick brown fox." "  two leading spaces, 42 and 3.14159" $'tab\tseparated\ttext' \
    "caf\xc3\xa9 na\xc3\xafve \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e \xf0\x9f\x98\x80" \
    "<|endoftext|> stays text" "" "trailing spaces   " "don't can't it's" >"$T/text.txt"
"$TOK" --model "$GPT2" <"$T/text.txt" >"$T/ids.txt"
check "encode exits 0" "[ $? -eq 0 ]"
check "one line of ids per line" "[ \$(wc -l <$T/ids.txt) -eq \$(wc -l <$T/text.txt) ]"
"$TOK" --model "$GPT2" --decode <"$T/ids.txt" >"$T/back.txt"
check "decode exits 0" "[ $? -eq 0 ]"
check "encode | decode round trip" "cmp -s $T/text.txt $T/back.txt"

out=$(printf '<|endoftext|>\n' | "$TOK" --model "$GPT2" --special)
check "--special: <|endoftext|> -> 50256 (got $out)" "[ '$out' = '50256' ]"
out=$(printf '<|endoftext|>\n' | "$TOK" --model "$GPT2")
check "without --special the string is text (got $out)" "[ '$out' != '50256' ] && ! echo '$out' | grep -qw 50256"

printf '{"text": "Hello world", "id": 1}\n\n{"text": "The quick brown fox."}\n' >"$T/d.jsonl"
"$TOK" --model "$GPT2" --data "$T/d.jsonl" --field text >"$T/d.ids"
check "--data exits 0" "[ $? -eq 0 ]"
check "--data ids equal stdin ids" "[ \"\$(sed -n 1p $T/d.ids)\" = '15496 995' ] && [ \"\$(sed -n 2p $T/d.ids)\" = \"\$(sed -n 1p $T/ids.txt)\" ]"

# other model paths: a directory with tokenizer.json, the tokenizer.json itself, a .ckpt
FIX=$HERE/../fixtures/hf_tiny_gpt2
if [ -f "$FIX/tokenizer.json" ]; then
    a=$(printf 'Hello world\n' | "$TOK" --model "$FIX")
    b=$(printf 'Hello world\n' | "$TOK" --model "$FIX/tokenizer.json")
    check "HF directory and its tokenizer.json agree ($a / $b)" "[ -n '$a' ] && [ '$a' = '$b' ]"
    "$BIN/ckpt_convert" "$FIX" "$T/m.ckpt" >/dev/null 2>"$T/conv"
    rc=$?
    check "ckpt_convert makes a .ckpt of the fixture ($(cat "$T/conv"))" "[ $rc -eq 0 ]"
    c=$(printf 'Hello world\n' | "$TOK" --model "$T/m.ckpt")
    check "a .ckpt carries the same tokenizer ($c)" "[ '$a' = '$c' ]"
else
    check "$FIX/tokenizer.json exists" false
fi

# errors
"$TOK" --model "$T/nope" </dev/null >/dev/null 2>"$T/e1"
rc=$?
check "missing model exits 1" "[ $rc -eq 1 ] && grep -q 'tokenize: --model $T/nope: no such file or directory' $T/e1"
mkdir "$T/empty"
"$TOK" --model "$T/empty" </dev/null >/dev/null 2>"$T/e2"
check "directory without a tokenizer exits 1" "[ $? -eq 1 ] && grep -q 'no tokenizer.json' $T/e2"
"$TOK" --model "$GPT2" --bogus </dev/null >/dev/null 2>"$T/e3"
check "unknown flag exits 1" "[ $? -eq 1 ] && grep -q 'unknown argument --bogus' $T/e3"
"$TOK" </dev/null >/dev/null 2>"$T/e4"
check "--model required" "[ $? -eq 1 ] && grep -q -- '--model is required' $T/e4"
printf '{"text": "ok"}\n{"text": oops}\n' >"$T/bad.jsonl"
"$TOK" --model "$GPT2" --data "$T/bad.jsonl" >/dev/null 2>"$T/e5"
check "bad JSONL line named" "[ $? -eq 1 ] && grep -q '$T/bad.jsonl:2: not valid JSON' $T/e5"
printf '{"body": "ok"}\n' >"$T/nofield.jsonl"
"$TOK" --model "$GPT2" --data "$T/nofield.jsonl" >/dev/null 2>"$T/e6"
check "missing field named" "[ $? -eq 1 ] && grep -q 'nofield.jsonl:1: missing field \"text\"' $T/e6"
"$TOK" --model "$GPT2" --data "$T/absent.jsonl" >/dev/null 2>"$T/e7"
check "missing data file" "[ $? -eq 1 ] && grep -q -- '--data $T/absent.jsonl: cannot open' $T/e7"
printf '15496 995\n15496 x\n' | "$TOK" --model "$GPT2" --decode >/dev/null 2>"$T/e8"
check "bad id named" "[ $? -eq 1 ] && grep -q 'stdin:2: \"x\" is not a token id' $T/e8"
printf '99999999\n' | "$TOK" --model "$GPT2" --decode >/dev/null 2>"$T/e9"
check "id out of range" "[ $? -eq 1 ] && grep -q 'stdin:1: token id 99999999 is outside the vocabulary (0..50256)' $T/e9"

finish
