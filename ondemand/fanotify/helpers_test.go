package fanotify

import abi "github.com/erofsd/erofsd/ondemand/internal/fanotifyabi"

type abiEvent = abi.Event

func decodeFirst(b []byte) (abi.Event, error) {
	ev, _, err := abi.Next(b)
	return ev, err
}
