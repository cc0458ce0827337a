# restore-tui rescue system: the wizard on the first console and on the serial port,
# a plain shell everywhere else (tty2, Alt+F2).
[ -f ~/.profile ] && . ~/.profile
if [ -z "${RESTORE_TUI_SHELL:-}" ]; then
    case "$(tty)" in
        /dev/tty1 | /dev/ttyS0) exec /usr/local/sbin/restore-tui-console ;;
    esac
fi
