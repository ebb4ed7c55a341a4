# bash completion for totp-admin(8)

_totp_admin_users() {
    compgen -u -- "$1"
}

_totp_admin() {
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion || return
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
        prev="${COMP_WORDS[COMP_CWORD-1]}"
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    case "$prev" in
        --config)
            COMPREPLY=($(compgen -f -- "$cur"))
            return
            ;;
        --user|-u)
            COMPREPLY=($(_totp_admin_users "$cur"))
            return
            ;;
        --group|-g)
            COMPREPLY=($(compgen -g -- "$cur"))
            return
            ;;
        --qr)
            COMPREPLY=($(compgen -W "color dark-terminal light-terminal none" -- "$cur"))
            return
            ;;
    esac

    # The command words typed so far, without options and their values.
    local i cmd="" sub=""
    for ((i = 1; i < cword; i++)); do
        case "${words[i]}" in
            --config|--user|-u|--group|-g|--qr|--name) ((i++)) ;;
            -*) ;;
            *)
                if [[ -z $cmd ]]; then
                    cmd="${words[i]}"
                elif [[ -z $sub ]]; then
                    sub="${words[i]}"
                fi
                ;;
        esac
    done

    local global="--config --json --help"
    case "$cmd" in
        "")
            COMPREPLY=($(compgen -W "enroll status disable reset unlock list recovery-codes policy import doctor store help --config --json --help --version" -- "$cur"))
            ;;
        enroll)
            COMPREPLY=($(compgen -W "--user --name --secret-stdin --replace --qr $global" -- "$cur"))
            ;;
        status|recovery-codes)
            COMPREPLY=($(compgen -W "--user $global" -- "$cur"))
            ;;
        reset)
            COMPREPLY=($(compgen -W "--user --name --logout $global" -- "$cur"))
            ;;
        unlock)
            COMPREPLY=($(compgen -W "--user $global" -- "$cur"))
            ;;
        disable)
            COMPREPLY=($(compgen -W "--name $global" -- "$cur"))
            ;;
        list|doctor)
            COMPREPLY=($(compgen -W "$global" -- "$cur"))
            ;;
        policy)
            case "$sub" in
                "") COMPREPLY=($(compgen -W "show set" -- "$cur")) ;;
                show) COMPREPLY=($(compgen -W "--user $global" -- "$cur")) ;;
                set) COMPREPLY=($(compgen -W "--mandatory --optional --group --yes $global" -- "$cur")) ;;
            esac
            ;;
        import)
            case "$sub" in
                "") COMPREPLY=($(compgen -W "google-authenticator" -- "$cur")) ;;
                *)
                    if [[ $cur == -* ]]; then
                        COMPREPLY=($(compgen -W "--user --replace $global" -- "$cur"))
                    else
                        COMPREPLY=($(compgen -f -- "$cur"))
                    fi
                    ;;
            esac
            ;;
        store)
            [[ -z $sub ]] && COMPREPLY=($(compgen -W "init rekey" -- "$cur"))
            ;;
    esac
}

complete -F _totp_admin totp-admin
