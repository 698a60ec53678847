package link

// For the external tests.
var ListMsgData = listMsgData
