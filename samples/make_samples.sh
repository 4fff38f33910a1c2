#!/usr/bin/env bash
# Regenerates the demo capture samples/pcaps/sipp_uac_uas_udp_mixed.pcap: SIPp 3.6
# (Debian sip-tester) as UAC and UAS on 127.0.0.1 over UDP, captured with tcpdump on
# lo. Six flows, one after another:
#   1. INVITE answered (100/180/200/ACK), a few RTP packets (RFC 2833 digit 1 from
#      SIPp's dtmf_2833_1.pcap), BYE/200
#   2. INVITE -> 486 Busy Here      3. INVITE -> 404 Not Found
#   4. INVITE -> 180, CANCEL -> 200 + 487
#   5. INVITE -> 407, INVITE with Proxy-Authorization -> 200, BYE
#   6. REGISTER -> 401, REGISTER with Authorization -> 200
# The SIPp scenarios are the ones the peer tests use (tests/peers/scenarios).
# Needs root (capture on lo), sipp, tcpdump; takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=samples/pcaps/sipp_uac_uas_udp_mixed.pcap
SC=tests/peers/scenarios
HOST=127.0.0.1
UAS_PORT=5060
UAC_PORT=5070
UAS_MEDIA=16000
UAC_MEDIA=17000
RTP_PCAP=/usr/share/sip-tester/dtmf_2833_1.pcap

for tool in sipp tcpdump ss; do
  command -v "$tool" >/dev/null || { echo "missing $tool (make deb)" >&2; exit 1; }
done
[ -r "$RTP_PCAP" ] || { echo "missing $RTP_PCAP (Debian sip-tester)" >&2; exit 1; }
for port in $UAS_PORT $UAC_PORT; do
  if ss -Hlun "sport = :$port" | grep -q .; then
    echo "UDP port $port is in use; stop what uses it first" >&2; exit 1
  fi
done

work=$(mktemp -d)
capture_pid=""
cleanup() {
  [ -n "$capture_pid" ] && kill -INT "$capture_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Fill the {{name}} placeholders of a scenario: fill FILE OUT name=value...
fill() {
  local src=$1 out=$2; shift 2
  cp "$SC/$src" "$out"
  for kv in "$@"; do
    local value=${kv#*=}
    value=${value//&/\\&}
    sed -i "s|{{${kv%%=*}}}|${value}|g" "$out"
  done
}

fill uas_reject.xml "$work/uas_486.xml" code=486 "reason=Busy Here"
fill uas_reject.xml "$work/uas_404.xml" code=404 "reason=Not Found"
fill uas_auth.xml "$work/uas_407.xml" code=407 "reason=Proxy Authentication Required" \
  auth_header=Proxy-Authenticate \
  'check=<ereg regexp="Digest" search_in="hdr" header="Proxy-Authorization:" check_it="true" assign_to="authuser"/>' \
  'gate=<nop next="good"><action><log message="[$authuser]"/></action></nop>'
# The answered call plays a few RTP packets after the ACK.
sed 's|<pause/>|<nop><action><exec play_pcap_audio="'"$RTP_PCAP"'"/></action></nop>\n  <pause/>|' \
  "$SC/uac_answer.xml" > "$work/uac_answer_rtp.xml"

tcpdump -i lo -n -U --immediate-mode -Z root -B 16384 -s 0 -w "$work/demo.pcap" \
  "udp and (port $UAS_PORT or port $UAC_PORT or portrange $UAS_MEDIA-$((UAC_MEDIA + 10)))" \
  2>"$work/tcpdump.err" &
capture_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/tcpdump.err" && break; sleep 0.05; done
grep -q "listening on" "$work/tcpdump.err" || { cat "$work/tcpdump.err" >&2; exit 1; }
sleep 0.3

# flow UAC_XML UAS_XML [extra UAC args...]: one call, UAS first, both bounded in time.
flow() {
  local uac=$1 uas=$2; shift 2
  timeout 20 sipp -sf "$uas" -i $HOST -p $UAS_PORT -mp $UAS_MEDIA -m 1 -nostdin \
    >"$work/uas.log" 2>&1 &
  local uas_pid=$!
  for _ in $(seq 100); do ss -Hlun "sport = :$UAS_PORT" | grep -q . && break; sleep 0.05; done
  timeout 20 sipp -sf "$uac" -i $HOST -p $UAC_PORT -mp $UAC_MEDIA -m 1 -nostdin \
    -au alice -ap secret "$@" $HOST:$UAS_PORT >"$work/uac.log" 2>&1 \
    || { echo "UAC failed: $uac" >&2; cat "$work/uac.log" >&2; exit 1; }
  wait "$uas_pid" || { echo "UAS failed: $uas" >&2; cat "$work/uas.log" >&2; exit 1; }
  sleep 0.2
}

flow "$work/uac_answer_rtp.xml" "$SC/uas_answer.xml" -d 500
flow "$SC/uac_reject.xml" "$work/uas_486.xml"
flow "$SC/uac_reject.xml" "$work/uas_404.xml"
flow "$SC/uac_cancel.xml" "$SC/uas_cancel.xml"
flow "$SC/uac_auth.xml" "$work/uas_407.xml" -d 200
flow "$SC/uac_register.xml" "$SC/uas_register.xml"

sleep 0.3
kill -INT "$capture_pid"
wait "$capture_pid" || true
capture_pid=""
if ! grep -q "^0 packets dropped by kernel" "$work/tcpdump.err"; then
  cat "$work/tcpdump.err" >&2; echo "capture lost packets" >&2; exit 1
fi
mkdir -p "$(dirname "$OUT")"
mv "$work/demo.pcap" "$OUT"
chmod 644 "$OUT"
echo "wrote $OUT ($(stat -c %s "$OUT") bytes)"
