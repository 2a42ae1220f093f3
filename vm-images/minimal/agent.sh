# tunlab guest agent (busybox sh): commands from the host over the virtio-serial port
# org.tunlab.agent, one request per line, several at once:
#   ID TIMEOUT STDIN_B64 ENV_B64 ARG_B64...   ->   ID CODE STDOUT_B64 STDERR_B64
# base64 keeps it binary-safe; "-" is an empty field. ID 0 from the agent says it is ready.
BB=${1:-busybox}
B() { "$BB" "$@"; }
port=
for p in /sys/class/virtio-ports/*; do
    [ "$(B cat "$p/name" 2>/dev/null)" = org.tunlab.agent ] && port=/dev/${p##*/}
done
[ -n "$port" ] || { echo "tunlab agent: no org.tunlab.agent port"; B poweroff -f; }
exec 3<>"$port"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
B mkdir -p /run/tunlab
dec() { [ "$1" = - ] && return 0; printf '%s' "$1" | B base64 -d; }
enc() { if [ -s "$1" ]; then B base64 -w0 "$1"; else printf -; fi; }
reply() {
    # one writer at a time: mkdir is atomic
    while ! B mkdir /run/tunlab/lock 2>/dev/null; do B usleep 1000; done
    printf '%s\n' "$1" >&3
    B rmdir /run/tunlab/lock
}
handle() {
    id=$1 timeout=$2 input=$3 envb=$4
    shift 4
    d=/run/tunlab/$id
    B mkdir -p "$d"
    dec "$input" > "$d/in"
    set -- "$@"
    n=0
    for a in "$@"; do
        n=$((n + 1))
        dec "$a" > "$d/a$n"
    done
    (
        if [ "$envb" != - ]; then
            while IFS= read -r kv; do export "$kv"; done <<ENV
$(dec "$envb")
ENV
        fi
        i=0
        set --
        while [ $i -lt $n ]; do i=$((i + 1)); set -- "$@" "$(B cat "$d/a$i")"; done
        # by path: a bare name would run busybox's applet even where the root has the real tool
        cmd=$1
        case "$cmd" in
            */*) ;;
            *) for dir in $(printf '%s' "$PATH" | B tr : ' '); do
                   if [ -x "$dir/$cmd" ] && [ ! -d "$dir/$cmd" ]; then cmd=$dir/$cmd; break; fi
               done ;;
        esac
        [ -x "$cmd" ] || { echo "tunlab agent: $1: command not found" > "$d/err"; exit 127; }
        shift
        if [ "$timeout" != 0 ]; then
            exec "$BB" timeout -s KILL "$timeout" "$cmd" "$@" < "$d/in" > "$d/out" 2> "$d/err"
        fi
        exec "$cmd" "$@" < "$d/in" > "$d/out" 2> "$d/err"
    )
    code=$?
    reply "$id $code $(enc "$d/out") $(enc "$d/err")"
    B rm -rf "$d"
}
reply "0 READY $(B uname -r)"
while IFS=' ' read -r line <&3; do
    [ -n "$line" ] || continue
    # shellcheck disable=SC2086
    handle $line &
done
