package cli

import (
	"context"
	"errors"

	"github.com/magpie-im/magpie/internal/engine"
)

// errorCode is the stable code of err: the engine's, or one of the CLI's
// own.
func errorCode(err error) string {
	var ae *engine.APIError
	switch {
	case errors.As(err, &ae):
		return ae.Code
	case errors.Is(err, context.Canceled):
		return engine.CodeInterrupted
	case errors.Is(err, engine.ErrEngineBusy):
		return engine.CodeEngineBusy
	}
	return engine.CodeOf(err)
}

// aboutPeer marks an error as being about a user, for the hint.
type aboutPeer struct {
	error
	peer string
}

func (e aboutPeer) Unwrap() error { return e.error }

func withPeer(err error, peer string) error {
	if err == nil {
		return nil
	}
	return aboutPeer{err, peer}
}

// hint says what to do next, as a command line to paste where there is
// one.
func (g *globals) hint(err error) string {
	peer := "NAME"
	var ap aboutPeer
	if errors.As(err, &ap) {
		peer = shellQuote(ap.peer)
	}
	group := "G"
	var ag aboutGroup
	switch {
	case errors.As(err, &ag):
		group = shellQuote(ag.group)
	case peer != "NAME":
		group = peer
	}
	switch errorCode(err) {
	case engine.CodeUnknownGroup:
		return "see your groups: " + g.magpie("group list") + "; name one by its name or its id"
	case engine.CodeNotMember:
		return "see who is in the group: " + g.magpie("group show "+group)
	case engine.CodeForbidden:
		return "that takes an admin of the group (or its owner); " + g.magpie("group show "+group) + " lists them"
	case engine.CodeGroupRefused:
		return "this client stopped following the group: the server sent a change that did not verify (" + g.magpie("group show "+group) + " says which)"
	case engine.CodeNotInitialized:
		return "set up this client first: " + g.magpie("init --invite 'magpie://…'") + " (the invite is the line `magpie serve` prints)"
	case engine.CodeNotRegistered:
		return "create an account first: " + g.magpie("register NAME")
	case engine.CodeUnknownUser:
		return "check the name (" + g.magpie("lookup "+peer) + "); usernames are 3 to 32 letters, digits and underscores"
	case engine.CodeTooLarge:
		return "send long text as a file: " + g.magpie("send "+peer+" --file PATH")
	case engine.CodeEmptyMessage:
		return "give the text to send: " + g.magpie("send "+peer+` "hello"`)
	case engine.CodeIdentityChanged:
		return "compare safety numbers with " + peer + ": " + g.magpie("verify "+peer) + ", then " + g.magpie("verify "+peer+" --confirm")
	case engine.CodeNotShown:
		return "look at the number first: " + g.magpie("verify "+peer) + ", compare it with " + peer + ", then confirm"
	case engine.CodeMismatch:
		return "the numbers differ: do not confirm; someone may be intercepting your messages with " + peer
	case engine.CodeServerKey:
		return "a Magpie server does not answer a wrong server key: compare the fingerprint " + g.magpie("init") + " printed with the server operator's, set this device's clock right, or ask for a new invite and run " + g.magpie("init --invite 'magpie://…'") + " again (it keeps your key and account)"
	case engine.CodeOffline:
		return "test the network with " + g.magpie("probe") + "; queued messages wait in " + g.magpie("outbox")
	case engine.CodeStorageFull:
		return "free space on the disk that holds the client's home, then try again: nothing is lost meanwhile"
	case engine.CodeServerFull:
		return "the server's disk is full: tell its operator; what you send waits on this device and goes once there is space"
	case engine.CodeEngineBusy:
		return "answer its prompt, or stop it, then try again"
	case engine.CodeAlreadySent:
		return "see where it stands: " + g.magpie("history "+peer)
	case engine.CodeNoKeys:
		return peer + " has to open Magpie once so that their keys are on the server"
	}
	return ""
}
