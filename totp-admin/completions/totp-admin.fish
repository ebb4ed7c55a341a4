# fish completion for totp-admin(8)

set -l commands enroll status disable reset unlock list recovery-codes policy import doctor store

complete -c totp-admin -f
complete -c totp-admin -l config -r -F -d 'Configuration file (root only)'
complete -c totp-admin -l json -d 'Print JSON'
complete -c totp-admin -s h -l help -d 'Show help'
complete -c totp-admin -n "not __fish_seen_subcommand_from $commands" -s V -l version -d 'Show the version'

complete -c totp-admin -n "not __fish_seen_subcommand_from $commands" -a enroll -d 'Set up a new second factor'
complete -c totp-admin -n "not __fish_seen_subcommand_from $commands" -a status -d 'Show enrollment, policy and lockout'
complete -c totp-admin -n "not __fish_seen_subcommand_from $commands" -a disable -d 'Remove your own second factor'
complete -c totp-admin -n "not __fish_seen_subcommand_from $commands" -a reset -d "Remove a user's factor and lockouts (root)"
complete -c totp-admin -n "not __fish_seen_subcommand_from $commands" -a unlock -d "Clear a user's lockouts (root)"
complete -c totp-admin -n "not __fish_seen_subcommand_from $commands" -a list -d 'List enrolled users (root)'
complete -c totp-admin -n "not __fish_seen_subcommand_from $commands" -a recovery-codes -d 'Make a new set of recovery codes'
complete -c totp-admin -n "not __fish_seen_subcommand_from $commands" -a policy -d 'Show or change who must use a second factor'
complete -c totp-admin -n "not __fish_seen_subcommand_from $commands" -a import -d 'Import a factor made by another tool (root)'
complete -c totp-admin -n "not __fish_seen_subcommand_from $commands" -a doctor -d 'Check config, store, PAM, sshd and clock (root)'
complete -c totp-admin -n "not __fish_seen_subcommand_from $commands" -a store -d 'Manage the store (root)'

complete -c totp-admin -n "__fish_seen_subcommand_from enroll status reset unlock recovery-codes import show" -s u -l user -x -a '(__fish_complete_users)' -d 'The user'
complete -c totp-admin -n "__fish_seen_subcommand_from enroll" -l secret-stdin -d 'Read a known base32 key from standard input (root)'
complete -c totp-admin -n "__fish_seen_subcommand_from enroll" -l replace -d 'Replace the factor already enrolled'
complete -c totp-admin -n "__fish_seen_subcommand_from enroll" -l qr -x -a 'color dark-terminal light-terminal none' -d 'QR code drawing'
complete -c totp-admin -n "__fish_seen_subcommand_from enroll reset disable" -l name -x -d 'The factor (enroll: another one)'
complete -c totp-admin -n "__fish_seen_subcommand_from reset" -l logout -d "Also end the user's sessions"

complete -c totp-admin -n "__fish_seen_subcommand_from policy; and not __fish_seen_subcommand_from show set" -a show -d 'Show the policy'
complete -c totp-admin -n "__fish_seen_subcommand_from policy; and not __fish_seen_subcommand_from show set" -a set -d 'Change the policy (root)'
complete -c totp-admin -n "__fish_seen_subcommand_from set" -l mandatory -d 'Require a second factor'
complete -c totp-admin -n "__fish_seen_subcommand_from set" -l optional -d 'Do not require it'
complete -c totp-admin -n "__fish_seen_subcommand_from set" -s g -l group -x -a '(__fish_complete_groups)' -d 'For this group only'
complete -c totp-admin -n "__fish_seen_subcommand_from set" -l yes -d 'Go ahead even when accounts would be refused'

complete -c totp-admin -n "__fish_seen_subcommand_from import; and not __fish_seen_subcommand_from google-authenticator" -a google-authenticator -d 'A ~/.google_authenticator file'
complete -c totp-admin -n "__fish_seen_subcommand_from google-authenticator" -F
complete -c totp-admin -n "__fish_seen_subcommand_from google-authenticator" -l replace -d 'Replace the factor the user already has'

complete -c totp-admin -n "__fish_seen_subcommand_from store; and not __fish_seen_subcommand_from init rekey" -a init -d 'Create or migrate the store'
complete -c totp-admin -n "__fish_seen_subcommand_from store; and not __fish_seen_subcommand_from init rekey" -a rekey -d 'Re-seal every key under a new host key'
